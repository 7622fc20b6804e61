using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;
using MlArtifactFs.Reading;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Mounting;

/// <summary>
/// The read-only file system of a model: the FUSE interface over a <see cref="FileTree"/>. Each open
/// gets a <see cref="FileReader"/> (hit or miss, read-ahead, fallbacks live there). Complete, verified
/// files open in passthrough when the kernel allows, so warm reads never enter this process.
/// </summary>
public sealed class ModelFileSystem : IFuseFileSystem, IDisposable
{
    private const uint FileMode = Libc.S_IFREG | 0x124; // r--r--r--
    private const uint DirMode = Libc.S_IFDIR | 0x16D;  // r-xr-xr-x

    private readonly BlobCache _cache;
    private readonly FetchPath _fetch;
    private readonly CounterSet _counters;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<ulong, OpenFile> _handles = new();
    private readonly Lock _treesLock = new();
    private readonly Dictionary<ulong, NodeOpens> _nodeOpens = [];              // guarded by _treesLock
    private readonly Dictionary<CachedBlob, Backing> _backings = [];            // guarded by _treesLock
    private List<FileTree> _trees;                                              // copy-on-write, guarded by _treesLock
    private volatile FileTree _current;
    private FuseSession? _session;
    private long _nextHandle;
    private readonly uint _uid = Libc.GetUid(), _gid = Libc.GetGid();
    private readonly ulong _mountTime = (ulong)DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public ModelFileSystem(FileTree tree, BlobCache cache, FetchPath fetch, CounterSet counters, ILogger logger)
    {
        _current = tree;
        _trees = [tree];
        _cache = cache;
        _fetch = fetch;
        _counters = counters;
        _logger = logger;
    }

    public FileTree Current => _current;

    /// <summary>How long the kernel may keep entries and attributes (set from the mount options).</summary>
    public ulong EntryTimeoutSeconds { get; init; } = 3600;

    /// <summary>Open files in passthrough once complete (off: always serve reads in-process).</summary>
    public bool UsePassthrough { get; init; } = true;

    public int OpenHandles => _handles.Count;

    private sealed class OpenFile(FileTree.Node node, FileReader reader, bool passthrough)
    {
        public readonly FileTree.Node Node = node;
        public readonly FileReader Reader = reader;
        public CachedBlob Blob => Reader.Blob;
        public readonly bool Passthrough = passthrough;
    }

    private sealed class NodeOpens
    {
        public int Normal, Passthrough;
    }

    private sealed class Backing(int id)
    {
        public readonly int Id = id;
        public int Users;
    }

    void IFuseFileSystem.Initialized(FuseSession session, FuseConnectionInfo info) => _session = session;

    // ---- tree ------------------------------------------------------------------------------

    private FileTree.Node? Resolve(ulong id) => Resolve(id, out _);

    private FileTree.Node? Resolve(ulong id, out FileTree? owner)
    {
        var current = _current;
        owner = current;
        if (id == FuseConstants.RootId) return current.Root;
        if (current.Contains(id)) return current.Find(id);
        foreach (var tree in Volatile.Read(ref _trees))
            if (tree.Contains(id))
            {
                owner = tree;
                return tree.Find(id);
            }
        owner = null;
        return null;
    }

    /// <summary>Trees of earlier versions still held (kept while the kernel references any of their nodes).</summary>
    public int TreesHeld => Volatile.Read(ref _trees).Count;

    /// <summary>
    /// The kernel dropped references to a node. A tree that is no longer current and that the kernel no
    /// longer references anywhere is freed: nothing can reach its ids again (open files hold a reference).
    /// </summary>
    public void Forget(ulong node, ulong count)
    {
        if (node == FuseConstants.RootId || Resolve(node, out var tree) is null || tree is null) return;
        if (Interlocked.Add(ref tree.KernelReferences, -(long)count) > 0 || ReferenceEquals(tree, _current)) return;
        lock (_treesLock)
        {
            if (!ReferenceEquals(tree, _current) && Interlocked.Read(ref tree.KernelReferences) <= 0)
                _trees = [.. _trees.Where(t => !ReferenceEquals(t, tree))];
        }
    }

    private ulong KernelId(FileTree.Node node) => ReferenceEquals(node, _current.Root) || node.Parent is null ? FuseConstants.RootId : node.Id;

    private void FillAttr(FileTree.Node node, out FuseAttr attr)
    {
        attr = default;
        attr.Ino = KernelId(node);
        attr.ATime = attr.MTime = attr.CTime = _mountTime;
        attr.Uid = _uid;
        attr.Gid = _gid;
        attr.BlkSize = 1 << 20; // tools size their buffers from st_blksize; 1 MiB matches our READ size
        if (node.IsDirectory)
        {
            attr.Mode = DirMode;
            attr.NLink = 2 + (uint)node.Children.Count(c => c.IsDirectory);
            attr.Size = 4096;
        }
        else
        {
            attr.Mode = FileMode;
            attr.NLink = 1;
            attr.Size = (ulong)node.File!.Size;
            attr.Blocks = (attr.Size + 511) / 512;
        }
    }

    private void FillEntry(FileTree.Node node, out FuseEntryOut entry)
    {
        entry = default;
        entry.NodeId = KernelId(node);
        entry.EntryValid = entry.AttrValid = EntryTimeoutSeconds;
        FillAttr(node, out entry.Attr);
    }

    public Errno Lookup(ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        var dir = Resolve(parent, out var tree);
        if (dir is null) return Errno.ENOENT;
        if (!dir.IsDirectory) return Errno.ENOTDIR;
        var child = FileTree.FindChild(dir, name);
        if (child is null) return Errno.ENOENT;
        FillEntry(child, out entry);
        Interlocked.Increment(ref tree!.KernelReferences); // the kernel now holds one on child, until FORGET
        return Errno.Ok;
    }

    public Errno GetAttr(ulong node, out FuseAttr attr)
    {
        var n = Resolve(node);
        if (n is null)
        {
            attr = default;
            return Errno.ENOENT;
        }
        FillAttr(n, out attr);
        return Errno.Ok;
    }

    public Errno StatFs(ulong node, out FuseKStatFs stat)
    {
        var tree = _current;
        stat = default;
        stat.BSize = stat.FrSize = 4096;
        stat.Blocks = (ulong)((tree.TotalBytes + 4095) / 4096);
        stat.Files = (ulong)tree.Count;
        stat.NameLen = 255;
        return Errno.Ok;
    }

    // ---- directories -------------------------------------------------------------------------

    public Errno OpenDir(ulong node, out ulong handle)
    {
        handle = 0;
        var n = Resolve(node);
        if (n is null) return Errno.ENOENT;
        return n.IsDirectory ? Errno.Ok : Errno.ENOTDIR;
    }

    public Errno ReadDir(ulong node, ulong handle, long offset, ref DirectoryListing listing)
    {
        var dir = Resolve(node, out var tree);
        if (dir is null) return Errno.ENOENT;
        Span<byte> name = stackalloc byte[1024]; // a child's name in UTF-8 (at most 255 bytes: the manifest's rule)
        // Cookies: 1 = after ".", 2 = after "..", 3+i = after child i.
        for (long cookie = offset; cookie < dir.Children.Count + 2; cookie++)
        {
            FuseEntryOut entry = default;
            bool added;
            if (cookie == 0)
            {
                FillEntry(dir, out entry);
                added = listing.TryAdd("."u8, KernelId(dir), FuseConstants.DirentTypeDir, 1, in entry);
            }
            else if (cookie == 1)
            {
                var parent = dir.Parent ?? dir;
                FillEntry(parent, out entry);
                added = listing.TryAdd(".."u8, KernelId(parent), FuseConstants.DirentTypeDir, 2, in entry);
            }
            else
            {
                var child = dir.Children[(int)cookie - 2];
                if (listing.Plus) FillEntry(child, out entry);
                added = listing.TryAdd(name[..System.Text.Encoding.UTF8.GetBytes(child.Name, name)], KernelId(child),
                    child.IsDirectory ? FuseConstants.DirentTypeDir : FuseConstants.DirentTypeReg, cookie + 1, in entry);
                // READDIRPLUS entries other than "." and ".." count as lookups for the kernel.
                if (added && listing.Plus) Interlocked.Increment(ref tree!.KernelReferences);
            }
            if (!added) break;
        }
        return Errno.Ok;
    }

    // ---- files ---------------------------------------------------------------------------------

    public Errno Open(ulong node, int flags, out FuseOpenResult result)
    {
        result = default;
        var n = Resolve(node);
        if (n is null) return Errno.ENOENT;
        if (n.IsDirectory) return Errno.EISDIR;
        CachedBlob blob;
        try { blob = n.File!.OpenBlob(_cache); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _logger.LogError("{File}: cannot open its cache file: {Error}", n.File!.Path, e.Message);
            return ReadErrors.ToErrno(e);
        }
        if (blob.Poison is not null)
        {
            _cache.Release(blob);
            return Errno.EIO;
        }
        _fetch.Checks.Register(blob);
        _fetch.Checks.Scrub(blob, n.File!.Path); // a fully cached file from an earlier run: check it, then passthrough

        int backingId = 0;
        lock (_treesLock)
        {
            if (!_nodeOpens.TryGetValue(n.Id, out var opens)) _nodeOpens[n.Id] = opens = new NodeOpens();
            // Passthrough and normal opens of one inode cannot be mixed: decide per file, only when complete
            // (or while a backing registered then is still in use).
            if (UsePassthrough && _session is { PassthroughEnabled: true } session && opens.Normal == 0 && (blob.IsComplete || _backings.ContainsKey(blob))
                && BeginPassthrough(blob))
            {
                backingId = AcquireBacking(session, blob);
                if (backingId <= 0) EndPassthrough(blob);
            }
            if (backingId > 0) opens.Passthrough++;
            else if (opens.Passthrough > 0)
            {
                _cache.Release(blob);
                return Errno.EIO; // cannot happen unless the backing registration failed midway
            }
            else opens.Normal++;
        }

        ulong handle = (ulong)Interlocked.Increment(ref _nextHandle);
        _handles[handle] = new OpenFile(n, new FileReader(blob, n.File.Location, n.File.Path, _fetch.Fetcher, _fetch.Uncached, _fetch.Layouts, _counters), backingId > 0);
        _counters.Increment(Counters.Opens);
        if (backingId > 0)
        {
            _counters.Increment(Counters.PassthroughOpens);
            _counters.Add(Counters.PassthroughFileBytes, blob.Descriptor.Size);
        }
        result = new FuseOpenResult { Handle = handle, KeepCache = true, BackingId = backingId };
        return Errno.Ok;
    }

    /// <summary>A chunked blob keeps every chunk while the kernel may read its file directly (no eviction under passthrough).</summary>
    private static bool BeginPassthrough(CachedBlob blob) => blob is not ChunkedBlob chunked || chunked.TryBeginPassthrough();

    private static void EndPassthrough(CachedBlob blob) => (blob as ChunkedBlob)?.EndPassthrough();

    private int AcquireBacking(FuseSession session, CachedBlob blob)
    {
        if (_backings.TryGetValue(blob, out var backing))
        {
            backing.Users++;
            return backing.Id;
        }
        // The very file this process verified (not whatever the path names now); the kernel takes its own reference.
        int id = session.TryRegisterBackingFile(blob.DataFd);
        if (id <= 0) return 0;
        _backings[blob] = new Backing(id) { Users = 1 };
        return id;
    }

    public void Release(ulong node, ulong handle)
    {
        if (!_handles.TryRemove(handle, out var open)) return;
        lock (_treesLock)
        {
            if (_nodeOpens.TryGetValue(open.Node.Id, out var opens))
            {
                if (open.Passthrough) opens.Passthrough--;
                else opens.Normal--;
                if (opens.Normal == 0 && opens.Passthrough == 0) _nodeOpens.Remove(open.Node.Id);
            }
            if (open.Passthrough && _backings.TryGetValue(open.Blob, out var backing) && --backing.Users == 0)
            {
                _backings.Remove(open.Blob);
                _session?.ReleaseBackingFile(backing.Id);
            }
            if (open.Passthrough) EndPassthrough(open.Blob);
        }
        open.Reader.Dispose();
        _cache.Release(open.Blob);
    }

    public ValueTask<ReadResult> ReadAsync(ulong node, ulong handle, long offset, Memory<byte> buffer, CancellationToken cancel) =>
        _handles.TryGetValue(handle, out var open) ? open.Reader.ReadAsync(offset, buffer, cancel) : ValueTask.FromResult<ReadResult>(Errno.EBADF);

    // ---- version switch --------------------------------------------------------------------------

    /// <summary>
    /// Makes <paramref name="next"/> the tree new lookups see. Old nodes stay resolvable, so open
    /// handles keep reading the old version; the kernel's cached entries under the root and changed
    /// directories are invalidated so the next lookup sees the new tree.
    /// </summary>
    public void Switch(FileTree next)
    {
        FileTree previous;
        lock (_treesLock)
        {
            previous = _current;
            // A tree the kernel never looked into can go at once; the others go when their last node is forgotten.
            _trees = [.. _trees.Where(t => !ReferenceEquals(t, previous) || Interlocked.Read(ref t.KernelReferences) > 0), next];
            _current = next;
        }
        if (_session is not { } session) return;
        // Invalidate every name the kernel may have cached from either version (including negative entries).
        InvalidateNames(session, previous.Root, next.Root);
        session.NotifyInvalidateInode(FuseConstants.RootId);
    }

    private static void InvalidateNames(FuseSession session, FileTree.Node oldDir, FileTree.Node newDir)
    {
        ulong parent = oldDir.Parent is null ? FuseConstants.RootId : oldDir.Id;
        var names = new HashSet<string>(oldDir.Children.Select(c => c.Name), StringComparer.Ordinal);
        names.UnionWith(newDir.Children.Select(c => c.Name));
        foreach (var name in names) session.NotifyInvalidateEntry(parent, System.Text.Encoding.UTF8.GetBytes(name));
        if (newDir.Parent is not null) session.NotifyInvalidateInode(newDir.Id);
    }

    public void Dispose()
    {
        foreach (var handle in _handles.Keys) Release(0, handle);
    }
}
