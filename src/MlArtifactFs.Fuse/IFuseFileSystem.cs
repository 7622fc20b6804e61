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
/// A read-only file system as the FUSE layer sees it. Every method returns 0 or a positive errno
/// (never throws for expected conditions; an exception becomes EIO and is logged once by the session).
/// Names arrive as UTF-8 bytes without a terminator. Node ids are the file system's; 1 is the root.
/// Threading: called concurrently from several reader threads.
/// </summary>
public interface IFuseFileSystem
{
    void Initialized(FuseSession session, FuseConnectionInfo info) { }

    int Lookup(ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry);

    /// <summary>The kernel dropped <paramref name="count"/> references from LOOKUP/READDIRPLUS.</summary>
    void Forget(ulong node, ulong count) { }

    int GetAttr(ulong node, out FuseAttr attr);

    int Open(ulong node, int flags, out FuseOpenResult result);

    /// <summary>
    /// Reads into <paramref name="destination"/>; returns bytes read (short at end of file) or -errno.
    /// Completes synchronously on a cache hit; a miss completes later on any thread, and
    /// <paramref name="cancel"/> fires on INTERRUPT or unmount.
    /// </summary>
    ValueTask<int> ReadAsync(ulong node, ulong handle, long offset, Memory<byte> destination, CancellationToken cancel);

    /// <summary>
    /// Optional: where a READ's bytes already lie, complete and verified, in a file: the session then
    /// splices them from <paramref name="fd"/> (at <paramref name="offset"/>) into /dev/fuse, one copy in
    /// the kernel instead of a pread and a write through our buffer. False: <see cref="ReadAsync"/> answers.
    /// <paramref name="length"/> is what to send (short at the end of the file).
    /// </summary>
    bool TryGetFileSource(ulong node, ulong handle, long offset, int size, out int fd, out int length)
    {
        fd = -1;
        length = 0;
        return false;
    }

    void Release(ulong node, ulong handle) { }

    int OpenDir(ulong node, out ulong handle);

    /// <summary>Adds entries starting after cookie <paramref name="offset"/> until the listing is full.</summary>
    int ReadDir(ulong node, ulong handle, long offset, ref DirectoryListing listing);

    void ReleaseDir(ulong node, ulong handle) { }

    int StatFs(ulong node, out FuseKStatFs stat);
}
