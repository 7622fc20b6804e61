using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// The content-addressed disk cache: <c>ROOT/blobs/ab/&lt;sha256&gt;.data</c> (sparse) and
/// <c>.rec</c> (its <see cref="ChunkRecord"/>). Directory 0700, files 0600. Shared by every mount
/// and manifest using the same directory; identical files are stored once.
/// <para>
/// Bounded by <see cref="Capacity"/>: before a fetch writes, <see cref="EnsureRoom"/> evicts whole
/// blobs, least recently used first, never one open in this process or locked (open) by another.
/// Disk use counts allocated blocks, not apparent sizes.
/// </para>
/// </summary>
public sealed class BlobCache : IDisposable
{
    private readonly ILogger _logger;
    private readonly Dictionary<string, CachedBlob> _open = new(StringComparer.Ordinal); // refcount > 0; guarded by _lock
    /// <summary>
    /// Recently released blobs, kept open (oldest first) so what this process already checked stays
    /// trusted when the file is opened again; evictable, disposed first. Guarded by _lock.
    /// </summary>
    private readonly List<CachedBlob> _idle = [];
    private const int MaxIdleBlobs = 64;
    private readonly Lock _lock = new();
    private long _usedBytes;      // on disk: an estimate between evictions, measured (st_blocks) at each
    private long _reservedBytes;  // promised to fetches in flight
    private bool _warnedFull;

    public BlobCache(string root, long capacity, ILogger logger)
    {
        Root = Path.GetFullPath(root);
        Capacity = capacity;
        _logger = logger;
        Directory.CreateDirectory(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.SetUnixFileMode(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(BlobDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        _usedBytes = MeasureUsage();
    }

    public string Root { get; }
    public long Capacity { get; }
    private string BlobDirectory => Path.Combine(Root, "blobs");

    /// <summary>Default: $XDG_CACHE_HOME/mlfs, ~/.cache/mlfs, or /var/cache/mlfs as root.</summary>
    public static string DefaultRoot()
    {
        if (Libc.GetUid() == 0) return "/var/cache/mlfs";
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg, "mlfs");
    }

    public long UsedBytes => Interlocked.Read(ref _usedBytes);

    /// <summary>The data file of a blob named by the chunk index (null for a name that is not ours).</summary>
    public string? DataPathOf(string blobName) =>
        blobName.Length >= 64 && Manifest.ManifestLoader.IsSha256Hex(blobName[..64]) ? Path.Combine(BlobDirectory, blobName[..2], blobName + ".data") : null;

    /// <summary>Chunk size encoded in a blob name ("SHA-CHUNKSIZE"); the seed default for a bare SHA.</summary>
    public static long? ChunkSizeOf(string blobName)
    {
        if (blobName.Length == 64) return Manifest.ModelManifest.DefaultChunkSize;
        return blobName.Length > 65 && blobName[64] == '-' && long.TryParse(blobName.AsSpan(65), out long size) && size > 0 ? size : null;
    }

    // A different chunking of the same content gets its own blob (records are per chunk size).
    private static string NameOf(BlobDescriptor descriptor) =>
        descriptor.HasChunkHashes || descriptor.ChunkSize != Manifest.ModelManifest.DefaultChunkSize
            ? $"{descriptor.Sha256}-{descriptor.ChunkSize}" : descriptor.Sha256;

    private string DirectoryOf(BlobDescriptor descriptor) => Path.Combine(BlobDirectory, descriptor.Sha256[..2]);

    /// <summary>Whether an earlier run (or another process) left a record of this blob's chunks.</summary>
    public bool HasRecord(BlobDescriptor descriptor) =>
        File.Exists(Path.Combine(DirectoryOf(descriptor), NameOf(descriptor) + ".rec"));

    /// <summary>Opens (or shares) the blob for a file; pair with <see cref="Release"/>.</summary>
    public CachedBlob Open(BlobDescriptor descriptor)
    {
        lock (_lock)
        {
            string name = NameOf(descriptor);
            int idle = _idle.FindIndex(b => b.Name == name);
            if (idle >= 0)
            {
                var kept = _idle[idle];
                _idle.RemoveAt(idle);
                kept.RefCount = 1;
                kept.LastAccess = Environment.TickCount64;
                _open[name] = kept;
                return kept;
            }
            if (_open.TryGetValue(name, out var blob))
            {
                blob.RefCount++;
                blob.LastAccess = Environment.TickCount64;
                return blob;
            }
            string dir = DirectoryOf(descriptor);
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            blob = new CachedBlob(descriptor, name, Path.Combine(dir, name + ".data"), Path.Combine(dir, name + ".rec")) { RefCount = 1 };
            _open[name] = blob;
            return blob;
        }
    }

    public void Release(CachedBlob blob)
    {
        CachedBlob? retired = null;
        lock (_lock)
        {
            if (--blob.RefCount > 0) return;
            _open.Remove(blob.Name);
            _idle.Add(blob);
            if (_idle.Count > MaxIdleBlobs)
            {
                retired = _idle[0];
                _idle.RemoveAt(0);
            }
        }
        try { File.SetLastWriteTimeUtc(blob.RecordPath, DateTime.UtcNow); } catch (IOException) { } // LRU order across restarts
        retired?.Dispose();
    }

    /// <summary>
    /// Makes room for <paramref name="bytes"/> about to be written, evicting LRU blobs not in use.
    /// The bytes stay reserved until <see cref="ReleaseReservation"/>, so concurrent fetches cannot
    /// together overshoot the bound (counting a run's written bytes twice until it ends is the
    /// conservative side).
    /// </summary>
    public void EnsureRoom(long bytes)
    {
        long reserved = Interlocked.Add(ref _reservedBytes, bytes);
        long used = Interlocked.Read(ref _usedBytes) + reserved;
        if (used <= Capacity) return;
        lock (_lock)
        {
            var onDiskBlobs = EnumerateBlobs().ToList(); // one walk of the directory, used twice
            long onDisk = onDiskBlobs.Sum(b => b.Allocated);
            used = onDisk + Interlocked.Read(ref _reservedBytes);
            if (used > Capacity)
            {
                var openPaths = new HashSet<string>(_open.Values.Select(b => b.DataPath), StringComparer.Ordinal);
                foreach (var candidate in onDiskBlobs.Where(b => !openPaths.Contains(b.DataPath)).OrderBy(b => b.LastUse))
                {
                    if (used <= Capacity) break;
                    // An idle blob is evictable: close it first (its own shared lock would block the delete).
                    int idle = _idle.FindIndex(b => b.DataPath == candidate.DataPath);
                    if (idle >= 0)
                    {
                        _idle[idle].Dispose();
                        _idle.RemoveAt(idle);
                    }
                    if (TryDelete(candidate.DataPath, candidate.RecordPath))
                    {
                        used -= candidate.Allocated;
                        onDisk -= candidate.Allocated;
                    }
                }
            }
            Interlocked.Exchange(ref _usedBytes, onDisk);
            if (used > Capacity && !_warnedFull)
            {
                _warnedFull = true;
                _logger.LogWarning("cache {Root} is over its bound ({Used} > {Capacity} bytes) because every cached file is in use; reads go on",
                    Root, used, Capacity);
            }
        }
    }

    /// <summary>A fetch that reserved room finished: its bytes are now on disk (or were never written).</summary>
    public void ReleaseReservation(long bytes)
    {
        Interlocked.Add(ref _reservedBytes, -bytes);
        Interlocked.Add(ref _usedBytes, bytes);
    }

    private bool TryDelete(string dataPath, string recordPath)
    {
        // Another process holding the blob open has a shared flock on it: skip it.
        int fd = Libc.Open(dataPath, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0) return false;
        try
        {
            if (Libc.Flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0) return false;
            File.Delete(recordPath); // record first: a data file without a record is never trusted
            File.Delete(dataPath);
            File.Delete(Path.ChangeExtension(recordPath, ".lock"));
            _logger.LogDebug("evicted {Blob}", Path.GetFileName(dataPath));
            return true;
        }
        catch (IOException) { return false; }
        finally { Libc.Close(fd); }
    }

    private sealed record BlobOnDisk(string DataPath, string RecordPath, long Allocated, DateTime LastUse);

    private IEnumerable<BlobOnDisk> EnumerateBlobs()
    {
        if (!Directory.Exists(BlobDirectory)) yield break;
        foreach (var data in Directory.EnumerateFiles(BlobDirectory, "*.data", SearchOption.AllDirectories))
        {
            string record = Path.ChangeExtension(data, ".rec");
            if (Libc.Stat(data, out var st) != 0) continue;
            DateTime lastUse = File.Exists(record) ? File.GetLastWriteTimeUtc(record) : DateTime.MinValue;
            yield return new BlobOnDisk(data, record, st.Blocks * 512, lastUse);
        }
    }

    private long MeasureUsage() => EnumerateBlobs().Sum(b => b.Allocated);

    /// <summary>
    /// Deletes every blob no process has open (`mlfs cache clear`); returns how many were removed and
    /// how many were skipped because a running mount holds them.
    /// </summary>
    public (int Removed, int InUse) Clear()
    {
        lock (_lock)
        {
            foreach (var idle in _idle) idle.Dispose();
            _idle.Clear();
            var openPaths = new HashSet<string>(_open.Values.Select(b => b.DataPath), StringComparer.Ordinal);
            int removed = 0, inUse = 0;
            foreach (var blob in EnumerateBlobs().ToList())
            {
                if (!openPaths.Contains(blob.DataPath) && TryDelete(blob.DataPath, blob.RecordPath)) removed++;
                else inUse++;
            }
            Interlocked.Exchange(ref _usedBytes, MeasureUsage());
            return (removed, inUse);
        }
    }

    /// <summary>Cached blobs on disk and their allocated bytes (for `mlfs status` and `mlfs cache`).</summary>
    public (int Blobs, long Bytes) Usage()
    {
        var all = EnumerateBlobs().ToList();
        return (all.Count, all.Sum(b => b.Allocated));
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var blob in _open.Values) blob.Dispose();
            foreach (var blob in _idle) blob.Dispose();
            _open.Clear();
            _idle.Clear();
        }
    }
}
