using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse;

/// <summary>What the kernel and the mount agreed on in INIT, handed to the file system.</summary>
public sealed record FuseConnectionInfo(uint ProtocolMinor, uint MaxRead, bool PassthroughEnabled);

/// <summary>The answer to OPEN.</summary>
public struct FuseOpenResult
{
    public ulong Handle;
    /// <summary>Keep the page cache across opens: right for immutable trees.</summary>
    public bool KeepCache;
    /// <summary>Bypass the page cache: every read reaches the file system (and can be interrupted).</summary>
    public bool DirectIo;
    /// <summary>A backing id from <see cref="FuseSession.TryRegisterBackingFile"/> to open in passthrough, else 0.</summary>
    public int BackingId;
}

/// <summary>
/// A read-only file system as the FUSE layer sees it. Every method returns an <see cref="Errno"/>
/// (never throws for expected conditions; an exception becomes EIO and is logged once by the session).
/// Names arrive as UTF-8 bytes without a terminator. Node ids are the file system's; 1 is the root.
/// Threading: called concurrently from several reader threads.
/// </summary>
public interface IFuseFileSystem
{
    void Initialized(FuseSession session, FuseConnectionInfo info) { }

    Errno Lookup(ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry);

    /// <summary>The kernel dropped <paramref name="count"/> references from LOOKUP/READDIRPLUS.</summary>
    void Forget(ulong node, ulong count) { }

    Errno GetAttr(ulong node, out FuseAttr attr);

    Errno Open(ulong node, int flags, out FuseOpenResult result);

    /// <summary>
    /// Answers a READ of up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>: bytes
    /// written into <paramref name="buffer"/>, a file range for the session to splice, or an error (short
    /// at the end of the file). Completes synchronously on a cache hit; a miss completes later on any
    /// thread, and <paramref name="cancel"/> fires on INTERRUPT or unmount.
    /// </summary>
    ValueTask<ReadResult> ReadAsync(ulong node, ulong handle, long offset, Memory<byte> buffer, CancellationToken cancel);

    void Release(ulong node, ulong handle) { }

    Errno OpenDir(ulong node, out ulong handle);

    /// <summary>Adds entries starting after cookie <paramref name="offset"/> until the listing is full.</summary>
    Errno ReadDir(ulong node, ulong handle, long offset, ref DirectoryListing listing);

    void ReleaseDir(ulong node, ulong handle) { }

    Errno StatFs(ulong node, out FuseKStatFs stat);
}
