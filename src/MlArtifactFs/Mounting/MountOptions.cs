using MlArtifactFs.Fetching;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Mounting;

/// <summary>Everything `mlfs mount` takes, independent of the command line.</summary>
public sealed record MountOptions
{
    /// <summary>A local path, or an s3:// or http(s) URL fetched with the same settings as chunks.</summary>
    public required string ManifestPath { get; init; }
    /// <summary>A manifest (local or fetched) larger than this is refused before it is parsed.</summary>
    public long MaxManifestBytes { get; init; } = Manifest.ManifestSource.DefaultMaxBytes;
    public required string MountPoint { get; init; }
    public string? CacheDirectory { get; init; }
    /// <summary>50 GiB: a few large models; eviction keeps the cache under it.</summary>
    public long CacheSize { get; init; } = 50L << 30;
    public string? Endpoint { get; init; }
    /// <summary>Explicit endpoint and credentials; null resolves them from the environment (AWS chain).</summary>
    public S3Settings? S3 { get; init; }
    public bool PrefetchAll { get; init; }
    public bool AllowOther { get; init; }
    public bool Passthrough { get; init; } = true;
    public int ReadAheadKb { get; init; } = 8192;
    public FetcherOptions Fetcher { get; init; } = new();
    /// <summary>Redis connection string for the shared chunk index; null uses an in-process index.</summary>
    public string? Redis { get; init; }
    /// <summary>Fleet mode (serve verified chunks to peers, fetch from them first); needs <see cref="Redis"/>.</summary>
    public Fleet.FleetOptions? Fleet { get; init; }
    /// <summary>
    /// Publishers' keys (ECDSA P-256): with any, a manifest is used (at mount and at every switch) only if the
    /// signature beside it (<c>MANIFEST.sig</c>) verifies with one of them and covers exactly its bytes.
    /// </summary>
    public IReadOnlyList<System.Security.Cryptography.ECDsa> VerifyKeys { get; init; } = [];
    /// <summary>Control socket for `mlfs status` / `mlfs switch`; null picks the default for the mount point.</summary>
    public string? ControlSocket { get; init; }
}
