namespace Mlfs;

/// <summary>Exit codes of every `mlfs` command (documented in the README).</summary>
public static class ExitCodes
{
    public const int Success = 0;
    /// <summary>An unexpected error (a bug): the message says what happened.</summary>
    public const int Failure = 1;
    /// <summary>Bad command line or bad input: unknown option, invalid manifest, unreadable model folder.</summary>
    public const int InvalidInput = 2;
    /// <summary>Object storage refused or unreachable: wrong credentials, missing object, no connection.</summary>
    public const int StorageError = 3;
    /// <summary>The mount could not be made: mount point missing, not a directory, busy; no /dev/fuse; no privileges.</summary>
    public const int MountError = 4;
    /// <summary>No running mount answers at that mount point (status, switch).</summary>
    public const int NotMounted = 5;
    /// <summary>`mlfs cache verify` found recorded chunks whose bytes do not match their SHA-256.</summary>
    public const int CacheDamaged = 6;
    /// <summary>--verify-key was given and the manifest's signature does not hold (none, unknown key, altered, another manifest's): nothing mounted or switched.</summary>
    public const int SignatureRefused = 7;
}
