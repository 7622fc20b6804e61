using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// The disk cache: <c>ROOT/blobs/xy/NAME.data</c> (sparse), <c>NAME.rec</c> (its <see cref="ChunkRecord"/>,
/// chunked blobs) and <c>NAME.lock</c>, plus <c>ROOT/tmp/</c> for whole blobs still landing. Names come
/// from <see cref="BlobDescriptor.Name"/>: what a reader can verify, never a claim. Directories are
/// 0700 and ours, files 0600 and ours (<see cref="CacheFiles"/>). Shared by every mount, manifest and
/// process using the same directory; identical files are stored once.
/// <para>
/// Bounded by <see cref="Capacity"/>, one bound for every process on the directory (<see cref="CacheBudget"/>):
/// before a fetch writes, <see cref="EnsureRoomAsync"/> evicts, least recently used first, whole blobs no
/// process has open and single chunks of the blobs open here (<see cref="ChunkedBlob.TryEvict"/>), so a
/// file larger than the cache streams through it. Disk use counts allocated blocks, not apparent sizes.
/// </para>
/// </summary>
public sealed partial class BlobCache : IDisposable
{
    private readonly ILogger _logger;
    /// <summary>Who holds a blob open in this process: readers, fetch runs, background checks.</summary>
    private sealed class OpenEntry(string key, CachedBlob blob)
    {
        public readonly string Key = key;
        public readonly CachedBlob Blob = blob;
        public int References = 1; // guarded by BlobCache._lock
    }

    private readonly Dictionary<string, OpenEntry> _open = new(StringComparer.Ordinal);            // references > 0; guarded by _lock
    private readonly Dictionary<CachedBlob, OpenEntry> _byBlob = new(ReferenceEqualityComparer.Instance); // the same entries; guarded by _lock
    /// <summary>
    /// Recently released blobs, kept open (oldest first) so what this process already verified stays
    /// servable when the file is opened again; evictable, disposed first. Guarded by _lock.
    /// </summary>
    private readonly List<OpenEntry> _idle = [];
    private const int MaxIdleBlobs = 64;
    private readonly Lock _lock = new();
    private readonly CacheBudget _budget;
    private readonly SemaphoreSlim _evicting = new(1, 1);
    private readonly Timer _watch;
    private int _watchTicks;
    private long _pressureSeen;
    private List<BlobOnDisk> _closedBlobs = [];  // from the last walk of the directory, oldest first; guarded by _evicting
    private long _walkedAt = long.MinValue;      // Environment.TickCount64 of that walk
    private int _warnedOver;
    private int _disposed;

    public BlobCache(string root, long capacity, ILogger logger)
    {
        Root = Path.GetFullPath(root);
        Capacity = capacity;
        _logger = logger;
        CacheFiles.EnsurePrivateDirectory(Root);
        CacheFiles.EnsurePrivateDirectory(BlobDirectory);
        CacheFiles.EnsurePrivateDirectory(PrivateDirectory);
        RemoveLeftovers();
        _budget = new CacheBudget(Root, capacity);
        if (_budget.Problem is { } problem)
            _logger.LogWarning("cache {Root}: the bound cannot be shared with other processes ({Problem}); this process keeps {Capacity} bytes alone", Root, problem, capacity);
        _budget.SetOnDisk(MeasureUsage());
        _pressureSeen = _budget.Pressure;
        _watch = new Timer(_ => Watch(), null, WatchPeriodMs, WatchPeriodMs);
    }

    private const int WatchPeriodMs = 50;

    public string Root { get; }

    /// <summary>This process's --cache-size.</summary>
    public long Capacity { get; }

    /// <summary>The bound in force on the directory: the smallest of its live processes' --cache-size.</summary>
    public long Bound => Volatile.Read(ref _disposed) == 0 ? _budget.Bound : Capacity;


    private string BlobDirectory => Path.Combine(Root, "blobs");
    /// <summary>Where whole blobs land before they verify: files of this process only.</summary>
    internal string PrivateDirectory => Path.Combine(Root, "tmp");

    /// <summary>Chunks found damaged on disk by blobs of this cache (summed as they are closed, plus those open).</summary>
    public long DamagedChunks;

    /// <summary>Chunks named by the chunk index that were not usable (a name not ours, an index out of range, damaged bytes).</summary>
    public long IgnoredIndexEntries;

    /// <summary>Default: $XDG_CACHE_HOME/mlfs, ~/.cache/mlfs, or /var/cache/mlfs as root.</summary>
    public static string DefaultRoot()
    {
        if (Libc.GetUid() == 0) return "/var/cache/mlfs";
        string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache") : xdg, "mlfs");
    }

    /// <summary>Bytes the cache's files take on disk, all processes together (kept between measures).</summary>
    public long UsedBytes => Volatile.Read(ref _disposed) == 0 ? _budget.OnDisk : 0;

    private string DirectoryOf(string blobName) => Path.Combine(BlobDirectory, blobName.Substring(2, 2));

    /// <summary>Whether an earlier run (or another process) left this blob in the cache.</summary>
    public bool HasCached(BlobDescriptor descriptor) =>
        File.Exists(Path.Combine(DirectoryOf(descriptor.Name), descriptor.Name + (descriptor.HasChunkHashes ? ".rec" : ".data")));

    /// <summary>
    /// Opens (or shares) the blob for a file; pair with <see cref="Release"/>. Whole blobs (no chunk
    /// hashes) are shared in this process only between openers of the same <paramref name="source"/>:
    /// their bytes are served before they verify, so one manifest's URL must not feed another's reads.
    /// </summary>
    public CachedBlob Open(BlobDescriptor descriptor, string? source = null)
    {
        string key = descriptor.HasChunkHashes ? descriptor.Name : descriptor.Name + "|" + source;
        lock (_lock)
        {
            int idle = _idle.FindIndex(e => e.Key == key);
            if (idle >= 0)
            {
                var kept = _idle[idle];
                _idle.RemoveAt(idle);
                kept.References = 1;
                _open[key] = kept;
                return kept.Blob;
            }
            if (_open.TryGetValue(key, out var entry))
            {
                entry.References++;
                return entry.Blob;
            }
            string dir = DirectoryOf(descriptor.Name);
            CacheFiles.EnsurePrivateDirectory(dir);
            CachedBlob blob = descriptor.HasChunkHashes ? OpenChunkedLocked(descriptor, dir) : WholeBlob.Open(descriptor, dir, PrivateDirectory);
            if (blob.SetAside is { } reason)
                _logger.LogWarning("cache: {Blob} held {Reason}; set it aside and starting it afresh", descriptor.Name, reason);
            blob.DamageFound = () => Interlocked.Increment(ref DamagedChunks);
            entry = new OpenEntry(key, blob);
            _open[key] = entry;
            _byBlob[blob] = entry;
            return blob;
        }
    }

    /// <summary>Creation and the first read of the record happen under the blob's lock file, so two processes never see a half-made blob.</summary>
    private static ChunkedBlob OpenChunkedLocked(BlobDescriptor descriptor, string dir)
    {
        int lockFd = CacheFiles.OpenLock(Path.Combine(dir, descriptor.Name + ".lock"));
        if (lockFd >= 0) Libc.Flock(lockFd, Libc.LOCK_EX);
        try
        {
            for (int attempt = 1; ; attempt++)
            {
                try { return ChunkedBlob.Open(descriptor, dir); }
                catch (EvictedWhileOpeningException) when (attempt < 3) { } // evicted by another process meanwhile: open afresh
            }
        }
        finally { if (lockFd >= 0) Libc.Close(lockFd); }
    }

    /// <summary>Another reference to an open blob (a fetch run holds one until it ends); pair with <see cref="Release"/>.</summary>
    public void Retain(CachedBlob blob)
    {
        lock (_lock)
        {
            if (!_byBlob.TryGetValue(blob, out var entry) || entry.References <= 0) throw new InvalidOperationException($"{blob.Name} is not open");
            entry.References++;
        }
    }

    public void Release(CachedBlob blob)
    {
        CachedBlob? retired = null;
        lock (_lock)
        {
            if (!_byBlob.TryGetValue(blob, out var entry) || --entry.References > 0) return;
            _open.Remove(entry.Key);
            if (blob.Poison is not null) // a failed whole file: the next open starts over
            {
                _byBlob.Remove(blob);
                retired = blob;
            }
            else
            {
                _idle.Add(entry);
                if (_idle.Count > MaxIdleBlobs)
                {
                    retired = _idle[0].Blob;
                    _byBlob.Remove(retired);
                    _idle.RemoveAt(0);
                }
            }
        }
        if (blob.UsePath is { } usePath)
            try { File.SetLastWriteTimeUtc(usePath, DateTime.UtcNow); } catch (IOException) { } catch (UnauthorizedAccessException) { } // LRU order across restarts
        retired?.Dispose();
    }

    /// <summary>
    /// Reads chunk <paramref name="chunk"/> of another chunked blob named by the chunk index into
    /// <paramref name="destination"/> (exactly its length). The name and index are input: a name that is
    /// not ours, a chunk out of range or of another length is refused (false, counted). The caller
    /// verifies the bytes against its own chunk hash before they count.
    /// </summary>
    public bool TryReadIndexedChunk(string blobName, long chunk, Memory<byte> destination)
    {
        if (!BlobDescriptor.IsBlobName(blobName) || !blobName.StartsWith(BlobDescriptor.ChunkedPrefix, StringComparison.Ordinal) || chunk < 0)
        {
            Interlocked.Increment(ref IgnoredIndexEntries);
            return false;
        }
        string dir = DirectoryOf(blobName);
        try
        {
            using var record = CacheFiles.OpenExisting(Path.Combine(dir, blobName + ".rec"));
            using var data = CacheFiles.OpenExisting(Path.Combine(dir, blobName + ".data"));
            if (record is null || data is null) return false; // evicted since: stale, not hostile
            Span<byte> header = stackalloc byte[ChunkRecord.HeaderSize];
            if (RandomAccess.Read(record, header, 0) != ChunkRecord.HeaderSize || !ChunkRecord.TryReadHeader(header, out long chunkSize, out long size, out _)
                || chunk >= (size + chunkSize - 1) / chunkSize || Math.Min(chunkSize, size - chunk * chunkSize) != destination.Length)
            {
                Interlocked.Increment(ref IgnoredIndexEntries);
                return false;
            }
            for (int got = 0; got < destination.Length;)
            {
                int n = RandomAccess.Read(data, destination.Span[got..], chunk * chunkSize + got);
                if (n <= 0) return false;
                got += n;
            }
            return true;
        }
        catch (IOException e)
        {
            _logger.LogDebug("cache: chunk {Chunk} of {Blob} named by the index is unusable: {Error}", chunk, blobName, e.Message);
            Interlocked.Increment(ref IgnoredIndexEntries);
            return false;
        }
    }

    /// <summary>Temporary files of processes that died while a whole file landed (no lock held on them).</summary>
    private void RemoveLeftovers()
    {
        foreach (var part in Directory.EnumerateFiles(PrivateDirectory, "*.part"))
        {
            int fd = Libc.Open(part, Libc.O_RDONLY | Libc.O_CLOEXEC | 0x20000 /* O_NOFOLLOW */);
            if (fd < 0) continue;
            try { if (Libc.Flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) == 0) File.Delete(part); }
            catch (IOException) { }
            finally { Libc.Close(fd); }
        }
    }

    /// <summary>Whether a blob's data file is (still) in the cache, whoever wrote or evicted it.</summary>
    public bool HasBlobData(string blobName) =>
        BlobDescriptor.IsBlobName(blobName) && File.Exists(Path.Combine(DirectoryOf(blobName), blobName + ".data"));

    private bool TryDelete(string dataPath, string recordPath, long allocated = 0)
    {
        // Another process holding the blob open has a shared flock on it: skip it.
        int fd = Libc.Open(dataPath, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0) return false;
        try
        {
            if (Libc.Flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0) return false;
            File.Delete(recordPath); // record first: a data file without a record is never trusted
            File.Delete(dataPath);
            // The .lock file stays (it is empty): deleting it while another process holds it would let a
            // third one lock a new file of the same name, and two processes would create the blob at once.
            _logger.LogDebug("evicted {Blob}", Path.GetFileName(dataPath));
            BlobEvicted?.Invoke(Path.GetFileNameWithoutExtension(dataPath), allocated);
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
            // Blobs of earlier formats (other names) are listed too: never opened, they are the first to go.
            string record = Path.ChangeExtension(data, ".rec");
            if (Libc.LStat(data, out var st) != 0 || !st.IsRegularFile) continue;
            string name = Path.GetFileNameWithoutExtension(data);
            DateTime lastUse = !BlobDescriptor.IsBlobName(name) ? DateTime.MinValue
                : name.StartsWith(BlobDescriptor.WholePrefix, StringComparison.Ordinal) ? DateTimeOffset.FromUnixTimeSeconds(st.MTimeSec).UtcDateTime
                : File.Exists(record) ? File.GetLastWriteTimeUtc(record) : DateTime.MinValue;
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
            while (_idle.Count > 0) RetireIdle(0);
            var openPaths = new HashSet<string>(_open.Values.Select(e => e.Blob.DataPath), StringComparer.Ordinal);
            int removed = 0, inUse = 0;
            foreach (var blob in EnumerateBlobs().ToList())
            {
                if (!openPaths.Contains(blob.DataPath) && TryDelete(blob.DataPath, blob.RecordPath)) removed++;
                else inUse++;
            }
            _budget.SetOnDisk(MeasureUsage());
            return (removed, inUse);
        }
    }

    /// <summary>Cached blobs on disk and their allocated bytes (for `mlfs status` and `mlfs cache`).</summary>
    public (int Blobs, long Bytes) Usage()
    {
        var all = EnumerateBlobs().ToList();
        return (all.Count, all.Sum(b => b.Allocated));
    }

    /// <summary>Closes an idle blob (under _lock).</summary>
    private void RetireIdle(int index)
    {
        var entry = _idle[index];
        _idle.RemoveAt(index);
        _byBlob.Remove(entry.Blob);
        entry.Blob.Dispose();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        using (var stopped = new ManualResetEvent(false))
            if (_watch.Dispose(stopped)) stopped.WaitOne(); // no heartbeat or eviction starts after this
        _evicting.Wait();                                   // nor is one still running
        _budget.Dispose();
        lock (_lock)
        {
            foreach (var blob in _byBlob.Keys) blob.Dispose();
            _open.Clear();
            _idle.Clear();
            _byBlob.Clear();
        }
    }
}
