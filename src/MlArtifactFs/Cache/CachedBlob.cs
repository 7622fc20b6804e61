using System.Buffers;
using Microsoft.Win32.SafeHandles;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// One blob of the cache: a store of verified chunks that knows nothing of fetching.
/// <para>
/// <b>Chunked blobs</b> (the manifest lists chunk hashes): a sparse data file shared by every process on
/// the cache directory, and its <see cref="ChunkRecord"/>. A chunk may be served by this process
/// (<see cref="IsServable"/>) only once it verified against the descriptor's hash here: written by
/// <see cref="WriteVerified"/> from a <see cref="VerifiedChunk"/>, or adopted by <see cref="TryAdopt"/>,
/// which hashes what another process (or an earlier run) recorded. Only verified bytes are ever
/// written into the data file, and a region the record names is never written, truncated or punched:
/// a damaged one is first dropped from the record, then rewritten.
/// </para>
/// <para>
/// <b>Whole blobs</b> (no chunk hashes, the seed format): bytes can only be verified once the file is
/// complete, and are served before that (unverified, counted by the reader). So they land in a private
/// temporary file that no other process sees; once the whole file matches its sha256 it is renamed
/// into the shared directory. A shared whole blob found at open is adopted only after this process
/// hashed it whole (<see cref="TryAdoptWhole"/>).
/// </para>
/// <para>Threading: readers test bits without locks; record reads and appends are under
/// <c>_recordLock</c>; appends are single O_APPEND writes (atomic between processes).</para>
/// </summary>
public sealed class CachedBlob : IDisposable
{
    private const int ScratchSize = 256 << 10;
    private const int WriteSlice = 256 << 10;

    private SafeFileHandle _data;                    // whole blobs: swapped once for a private file when the shared one fails its check
    private readonly SafeFileHandle? _record;        // chunked only
    private int _appendFd = -1;                      // chunked only: the record, O_APPEND
    private readonly ChunkSet _servable;             // verified in this process: may be served (from memory while staged)
    private readonly ChunkSet _stored;               // verified and on disk (written or adopted): counts for completeness
    private readonly ChunkSet _recorded;             // named Verified by the record (a hint: adopt before serving)
    private readonly Lock _recordLock = new();
    private long _recordEnd;                         // guarded by _recordLock
    private string? _privatePath;                    // whole blobs still landing: our temporary file
    private bool _sharedCandidate;                   // whole blobs: the shared file exists and awaits our check
    private Task<bool>? _wholeCheck;                 // guarded by _recordLock
    private volatile bool _complete;
    private volatile Exception? _poison;
    private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private CachedBlob(BlobDescriptor descriptor, string dataPath, string? recordPath, SafeFileHandle data, SafeFileHandle? record)
    {
        Descriptor = descriptor;
        DataPath = dataPath;
        RecordPath = recordPath;
        _data = data;
        _record = record;
        _servable = new ChunkSet(descriptor.ChunkCount);
        _stored = new ChunkSet(descriptor.ChunkCount);
        _recorded = new ChunkSet(descriptor.ChunkCount);
        if (descriptor.ChunkCount == 0) SetComplete();
    }

    private void SetComplete()
    {
        _complete = true;
        _completed.TrySetResult();
    }

    private void SetPoison(Exception error)
    {
        _poison ??= error;
        _completed.TrySetException(_poison);
    }

    public BlobDescriptor Descriptor { get; }
    public string Name => Descriptor.Name;
    /// <summary>The shared data file (for a whole blob still landing, where it will be once verified).</summary>
    public string DataPath { get; }
    /// <summary>The record (chunked blobs only).</summary>
    public string? RecordPath { get; }
    /// <summary>The file whose modification time orders eviction (the record, or a whole blob's data).</summary>
    internal string UsePath => RecordPath ?? DataPath;

    /// <summary>Every chunk verified in this process (or the whole file): eligible for passthrough.</summary>
    public bool IsComplete => _complete;

    /// <summary>Set when a whole blob failed its whole-file check: every read of this blob fails.</summary>
    public Exception? Poison => _poison;

    /// <summary>Completes when the blob is complete and verified; faults when a whole-file check failed or could not run.</summary>
    public Task WholeVerified => _completed.Task;

    /// <summary>What was found unusable at open and set aside (a blob of the wrong size, an unreadable record).</summary>
    public string? SetAside { get; private set; }

    /// <summary>The data file's descriptor, for passthrough registration (the kernel takes its own reference).</summary>
    public int DataFd => CacheFiles.Fd(_data);

    internal int RefCount;
    /// <summary>The key it is open under in its <see cref="BlobCache"/>.</summary>
    internal string OpenKey = "";
    internal long LastAccess = Environment.TickCount64;
    /// <summary>1 once its verified chunks were published to the chunk index.</summary>
    internal int Registered;
    /// <summary>1 once a background check started.</summary>
    internal int Scrubbing;

    /// <summary>Chunks found damaged on disk (and dropped from the record) by this process.</summary>
    public long DamagedChunks;

    /// <summary>The cache it was opened from (for its totals).</summary>
    internal BlobCache? Owner;

    private void CountDamage()
    {
        Interlocked.Increment(ref DamagedChunks);
        if (Owner is { } owner) Interlocked.Increment(ref owner.DamagedChunks);
    }

    public int ServableChunks => _servable.Count;

    /// <summary>True when every chunk is recorded (or a shared whole file awaits its check): a check can complete it without fetching.</summary>
    public bool AllRecorded => Descriptor.HasChunkHashes ? Descriptor.ChunkCount > 0 && _recorded.Count == Descriptor.ChunkCount : _sharedCandidate;

    /// <summary>The record names this chunk as verified (by us, another process or an earlier run).</summary>
    public bool IsRecorded(int chunk) => Descriptor.HasChunkHashes && _recorded.Contains(chunk);

    // ---- opening -------------------------------------------------------------------------------

    /// <summary>
    /// Opens or creates a chunked blob in <paramref name="directory"/>. Called under the blob's lock
    /// file, so processes opening it at once never see a half-made pair of files.
    /// </summary>
    internal static CachedBlob OpenChunked(BlobDescriptor d, string directory)
    {
        string dataPath = Path.Combine(directory, d.Name + ".data"), recordPath = Path.Combine(directory, d.Name + ".rec");
        SafeFileHandle? data = CacheFiles.OpenExisting(dataPath), record = null;
        string? setAside = null;
        try
        {
            record = CacheFiles.OpenExisting(recordPath);
            if (data is not null || record is not null)
            {
                Span<byte> header = stackalloc byte[ChunkRecord.HeaderSize];
                bool usable = data is not null && record is not null
                    && RandomAccess.GetLength(data) == d.Size
                    && RandomAccess.Read(record, header, 0) == ChunkRecord.HeaderSize && ChunkRecord.HeaderMatches(header, d);
                if (!usable)
                {
                    // Wrong size, no record, another header: nothing in it is trusted. Set it aside (unlink:
                    // a process that has it open keeps its inode, and nothing it reads changes under it).
                    setAside = data is null ? "a record without data" : record is null ? "data without a record"
                        : RandomAccess.GetLength(data) != d.Size ? $"a data file of {RandomAccess.GetLength(data)} bytes, not {d.Size}" : "a record of another chunking";
                    data?.Dispose();
                    record?.Dispose();
                    data = record = null;
                    File.Delete(recordPath); // record first: data without a record is never trusted
                    File.Delete(dataPath);
                }
            }
            if (data is null)
            {
                data = CacheFiles.Create(dataPath) ?? throw new IOException($"cache file {dataPath} appeared while being created");
                RandomAccess.SetLength(data, d.Size); // our new file: sparse, of the right size
                record = CacheFiles.Create(recordPath) ?? throw new IOException($"cache file {recordPath} appeared while being created");
                RandomAccess.Write(record, ChunkRecord.Header(d), 0);
            }
            var blob = new CachedBlob(d, dataPath, recordPath, data, record) { SetAside = setAside };
            try
            {
                // Shared lock while open: a process evicting the cache skips blobs someone has open. One that
                // evicted it between our open and our lock has unlinked what we hold: the caller opens again.
                Libc.Flock(CacheFiles.Fd(data), Libc.LOCK_SH);
                if (Libc.Stat(dataPath, out var named) != 0 || Libc.FStat(CacheFiles.Fd(data), out var held) != 0 || named.Ino != held.Ino || named.Dev != held.Dev)
                    throw new EvictedWhileOpeningException();
                blob._appendFd = CacheFiles.OpenAppend(recordPath);
                blob.Refresh();
            }
            catch
            {
                blob.Dispose();
                throw;
            }
            return blob;
        }
        catch
        {
            data?.Dispose();
            record?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens a whole blob: the shared verified file when one exists (adopted only after
    /// <see cref="TryAdoptWhole"/>), else a private temporary file in <paramref name="privateDirectory"/>.
    /// </summary>
    internal static CachedBlob OpenWhole(BlobDescriptor d, string directory, string privateDirectory)
    {
        string dataPath = Path.Combine(directory, d.Name + ".data");
        var shared = CacheFiles.OpenExisting(dataPath);
        string? setAside = null;
        if (shared is not null && RandomAccess.GetLength(shared) != d.Size)
        {
            setAside = $"a data file of {RandomAccess.GetLength(shared)} bytes, not {d.Size}";
            shared.Dispose();
            shared = null;
            File.Delete(dataPath);
        }
        if (shared is not null)
        {
            var blob = new CachedBlob(d, dataPath, null, shared, null) { _sharedCandidate = d.Size > 0 };
            Libc.Flock(blob.DataFd, Libc.LOCK_SH);
            return blob;
        }
        var (temp, data) = CreatePrivate(d, privateDirectory);
        return new CachedBlob(d, dataPath, null, data, null) { _privatePath = temp, SetAside = setAside };
    }

    private static (string Path, SafeFileHandle Data) CreatePrivate(BlobDescriptor d, string privateDirectory)
    {
        string temp = Path.Combine(privateDirectory, $"{d.Name}.{Environment.ProcessId}.{Guid.NewGuid():N}.part");
        var data = CacheFiles.Create(temp) ?? throw new IOException($"temporary cache file {temp} exists already");
        RandomAccess.SetLength(data, d.Size);
        // Held while it lands: a later process removing leftovers of dead ones skips it.
        Libc.Flock(CacheFiles.Fd(data), Libc.LOCK_SH);
        return (temp, data);
    }

    // ---- reading -------------------------------------------------------------------------------

    /// <summary>May be served now by this process.</summary>
    public bool IsServable(int chunk) => _servable.Contains(chunk);

    /// <summary>True when every chunk overlapping [offset, offset+length) can be served now.</summary>
    public bool IsRangeServable(long offset, long length)
    {
        if (_complete || length <= 0) return true;
        int first = Descriptor.ChunkOf(offset), last = Descriptor.ChunkOf(offset + length - 1);
        for (int c = first; c <= last; c++)
            if (!_servable.Contains(c)) return false;
        return true;
    }

    /// <summary>
    /// Reads servable bytes: from memory for chunks verified a moment ago whose write has not landed yet
    /// (<see cref="Stage"/>), else pread from the data file. Callers check <see cref="IsRangeServable"/> first.
    /// </summary>
    public int Read(long offset, Span<byte> destination)
    {
        LastAccess = Environment.TickCount64;
        return _staged.IsEmpty ? ReadFile(offset, destination) : ReadStaged(offset, destination);
    }

    private int ReadStaged(long offset, Span<byte> destination)
    {
        int total = 0;
        long end = Math.Min(offset + destination.Length, Descriptor.Size);
        while (offset + total < end)
        {
            long at = offset + total;
            int chunk = Descriptor.ChunkOf(at);
            int take = (int)(Math.Min(Descriptor.ChunkEnd(chunk), end) - at);
            var piece = destination.Slice(total, take);
            if (_staged.TryGetValue(chunk, out var staged))
            {
                lock (staged.Lock)
                {
                    if (staged.Failed) throw new IOException($"{DataPath}: chunk {chunk} verified but could not be stored; it is fetched again");
                    if (!staged.Bytes.IsEmpty)
                    {
                        staged.Bytes.Span.Slice((int)(at - Descriptor.ChunkStart(chunk)), take).CopyTo(piece);
                        total += take;
                        continue;
                    }
                }
            }
            int n = ReadFile(at, piece); // stored: on disk
            total += n;
            if (n < take) break;
        }
        return total;
    }

    private int ReadFile(long offset, Span<byte> destination)
    {
        int total = 0;
        while (total < destination.Length)
        {
            int n = RandomAccess.Read(_data, destination[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    // ---- chunked: verified writes, adoption, the record ----------------------------------------------

    /// <summary>
    /// Stores a chunk that verified in memory. When the record already names it (another process got
    /// there first) the region is not written: equal bytes on disk are adopted as they are, different
    /// ones are damage, dropped from the record before they are rewritten. A full disk throws
    /// <see cref="CacheFullException"/> with nothing recorded and nothing punched.
    /// </summary>
    public void WriteVerified(in VerifiedChunk chunk)
    {
        if (chunk.Blob.Name != Descriptor.Name)
            throw new ArgumentException($"a chunk verified for blob {chunk.Blob.Name} offered to {Descriptor.Name}", nameof(chunk));
        int c = chunk.Index;
        bool stored = false;
        try
        {
            if (_stored.Contains(c)) { stored = true; return; }
            long start = Descriptor.ChunkStart(c);
            Refresh();
            if (_recorded.Contains(c))
            {
                if (DiskEquals(start, chunk.Bytes.Span))
                {
                    MarkServable(c);
                    MarkStored(c);
                    stored = true;
                    return;
                }
                Drop(c);
            }
            // Written in 256 KiB slices: measured on ext4 (Linux 6.18), one 4 MiB pwrite per chunk cost the
            // daemon twice the CPU of a cold load (page-cache copy and inode-lock spinning between runs).
            try
            {
                var bytes = chunk.Bytes.Span;
                for (int done = 0; done < bytes.Length; done += WriteSlice)
                    RandomAccess.Write(_data, bytes.Slice(done, Math.Min(WriteSlice, bytes.Length - done)), start + done);
            }
            catch (IOException e) when ((e.HResult & 0xFFFF) is Libc.ENOSPC or 122 /* EDQUOT */)
            {
                throw new CacheFullException($"the cache disk is full ({DataPath})", e);
            }
            AppendEntry((uint)c, ChunkRecord.Verified, Descriptor.ChunkHash(c));
            _recorded.Add(c);
            MarkServable(c);
            MarkStored(c);
            stored = true;
        }
        finally
        {
            Unstage(c, failed: !stored); // the caller's buffer is free once this returns
        }
    }

    /// <summary>
    /// Makes a chunk that just verified in memory servable in this process at once, read from
    /// <paramref name="chunk"/>'s buffer until <see cref="WriteVerified"/> has stored it (the caller keeps the
    /// buffer until then). Other processes, passthrough and completeness see it only once stored.
    /// </summary>
    public void Stage(in VerifiedChunk chunk)
    {
        if (chunk.Blob.Name != Descriptor.Name) throw new ArgumentException("a chunk verified for another blob", nameof(chunk));
        if (_stored.Contains(chunk.Index)) return;
        _staged[chunk.Index] = new StagedChunk { Bytes = chunk.Bytes };
        _servable.Add(chunk.Index);
    }

    /// <summary>
    /// The write ended: stored, the entry goes (reads now pread what was written); failed, the chunk stops
    /// being servable and its entry stays marked failed, so a reader that saw it servable gets an error,
    /// never the unwritten disk. The buffer may be reused once this returns.
    /// </summary>
    private void Unstage(int chunk, bool failed)
    {
        if (!_staged.TryGetValue(chunk, out var staged)) return;
        lock (staged.Lock)
        {
            if (failed)
            {
                _servable.Remove(chunk);
                staged.Failed = true;
            }
            staged.Bytes = default;
        }
        if (!failed) _staged.TryRemove(new KeyValuePair<int, StagedChunk>(chunk, staged));
    }

    private sealed class StagedChunk
    {
        public readonly Lock Lock = new();
        public ReadOnlyMemory<byte> Bytes; // guarded by Lock; empty once stored (or failed)
        public bool Failed;                // guarded by Lock
    }

    private readonly System.Collections.Concurrent.ConcurrentDictionary<int, StagedChunk> _staged = new();

    private void MarkStored(int chunk)
    {
        if (_stored.Add(chunk) && _stored.Count == Descriptor.ChunkCount) SetComplete();
    }

    /// <summary>
    /// Makes a recorded chunk servable once its bytes on disk hash to the descriptor's chunk hash.
    /// False when it is not recorded, or (then counted in <see cref="DamagedChunks"/> and dropped from the
    /// record) when its bytes do not match: the caller fetches it again.
    /// </summary>
    public bool TryAdopt(int chunk)
    {
        if (_servable.Contains(chunk)) return true;
        if (!IsRecorded(chunk)) return false;
        // One hash per chunk: a reader and the background check reaching the same chunk wait for each other.
        lock (_adoptLocks[chunk & (_adoptLocks.Length - 1)])
        {
            if (_servable.Contains(chunk)) return true;
            if (!IsRecorded(chunk)) return false;
            byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
            try
            {
                long start = Descriptor.ChunkStart(chunk);
                if (ChunkVerifier.RegionMatches(_data, start, Descriptor.ChunkLength(chunk), Descriptor.ChunkHash(chunk), scratch.AsSpan(0, ScratchSize)))
                {
                    MarkServable(chunk);
                    MarkStored(chunk);
                    return true;
                }
            }
            finally { ArrayPool<byte>.Shared.Return(scratch); }
            Drop(chunk);
            CountDamage();
            return false;
        }
    }

    private readonly Lock[] _adoptLocks = [.. Enumerable.Range(0, 16).Select(_ => new Lock())];

    /// <summary>Picks up entries other processes appended since we last looked.</summary>
    public void Refresh()
    {
        if (_record is null) return;
        lock (_recordLock)
            _recordEnd = ChunkRecord.ReadEntries(_record, Math.Max(_recordEnd, ChunkRecord.HeaderSize), ApplyEntry);
    }

    private void ApplyEntry(ChunkRecord.Entry entry)
    {
        if (entry.Chunk >= (uint)Descriptor.ChunkCount) return; // input: an index out of range names nothing
        int c = (int)entry.Chunk;
        if (entry.Kind == ChunkRecord.Dropped) _recorded.Remove(c);
        else if (entry.Sha256.AsSpan().SequenceEqual(Descriptor.ChunkHash(c))) _recorded.Add(c);
    }

    private void Drop(int chunk)
    {
        AppendEntry((uint)chunk, ChunkRecord.Dropped, Descriptor.ChunkHash(chunk));
        _recorded.Remove(chunk);
    }

    private bool DiskEquals(long offset, ReadOnlySpan<byte> expected)
    {
        byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
        try
        {
            for (int done = 0; done < expected.Length;)
            {
                int want = Math.Min(ScratchSize, expected.Length - done);
                int n = RandomAccess.Read(_data, scratch.AsSpan(0, want), offset + done);
                if (n <= 0 || !scratch.AsSpan(0, n).SequenceEqual(expected.Slice(done, n))) return false;
                done += n;
            }
            return true;
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    private void MarkServable(int chunk) => _servable.Add(chunk);

    private unsafe void AppendEntry(uint chunk, uint kind, ReadOnlySpan<byte> sha256)
    {
        byte* entry = stackalloc byte[ChunkRecord.EntrySize];
        ChunkRecord.WriteEntry(new Span<byte>(entry, ChunkRecord.EntrySize), chunk, kind, sha256);
        if (Libc.Write(_appendFd, entry, ChunkRecord.EntrySize) == ChunkRecord.EntrySize) return;
        int errno = Libc.LastErrno;
        // Disk full: a verified chunk stays servable in this process, it just will not survive a restart.
        // A drop that cannot be recorded is held in memory (not recorded here) and never served unchecked.
        if (errno is Libc.ENOSPC or 122 /* EDQUOT */) return;
        throw new IOException($"cannot append to {RecordPath}: {Libc.StrError(errno)}");
    }

    /// <summary>
    /// Allocates disk blocks for a range about to be fetched (best effort: a full disk shows at the write).
    /// Safe on a shared file: it only fills holes, never changes a byte; writes into allocated blocks skip
    /// ext4's per-block delayed-allocation work.
    /// </summary>
    public void Preallocate(long offset, long length) =>
        Libc.Fallocate(DataFd, Libc.FALLOC_FL_KEEP_SIZE, offset, length);

    // ---- whole blobs ----------------------------------------------------------------------------

    /// <summary>Whole blobs still landing: writes bytes into our private temporary file (nobody else reads it).</summary>
    public void WriteLanded(ReadOnlySpan<byte> bytes, long offset)
    {
        if (_privatePath is null) throw new InvalidOperationException($"{DataPath} is shared: only verified chunks may be written");
        try { RandomAccess.Write(_data, bytes, offset); }
        catch (IOException e) when ((e.HResult & 0xFFFF) is Libc.ENOSPC or 122 /* EDQUOT */)
        {
            throw new CacheFullException($"the cache disk is full ({_privatePath})", e);
        }
    }

    /// <summary>Whole blobs: the chunk's bytes landed (unverified). True when this was the last one.</summary>
    public bool MarkLanded(int chunk) => _servable.Add(chunk) && _servable.Count == Descriptor.ChunkCount;

    /// <summary>Ends every read of this blob with <paramref name="error"/> (whole-file verification could not run).</summary>
    public void PoisonWith(Exception error) => SetPoison(error);

    /// <summary>Whole blobs still landing: the bytes are private, so they may be rewritten by a retry.</summary>
    public bool IsPrivate => _privatePath is not null;

    /// <summary>
    /// Whole blobs: checks the complete private file against the sha256 and, when it matches, renames it
    /// into the shared directory. On a mismatch the blob is poisoned and its file deleted: nothing of it
    /// ever reached another process.
    /// </summary>
    public bool CompleteWhole()
    {
        if (_complete) return true;
        if (!VerifyWholeFile())
        {
            SetPoison(new ChunkVerificationException($"the file's SHA-256 does not match the manifest's {Descriptor.Sha256[..16]}…: dropped, never cached"));
            _servable.Clear();
            TryDelete(_privatePath);
            _privatePath = null;
            return false;
        }
        File.Move(_privatePath!, DataPath, overwrite: true); // atomic; a verified copy there already holds the same bytes
        _privatePath = null;
        SetComplete();
        return true;
    }

    /// <summary>
    /// Whole blobs found shared at open: hashes the file once (shared by concurrent callers) and adopts
    /// it when it matches. A mismatch sets it aside and switches to a private file to fetch into; false.
    /// </summary>
    public Task<bool> TryAdoptWhole(string privateDirectory)
    {
        lock (_recordLock)
        {
            if (_complete) return Task.FromResult(true);
            if (!_sharedCandidate) return Task.FromResult(false);
            return _wholeCheck ??= Task.Run(() =>
            {
                if (VerifyWholeFile())
                {
                    for (int c = 0; c < Descriptor.ChunkCount; c++) _servable.Add(c);
                    SetComplete();
                    return true;
                }
                // Damaged on disk: set it aside (only if the name still is the file we checked) and land a fresh copy privately.
                // Nothing of it was servable, so no reader sees the swap.
                CountDamage();
                if (Libc.Stat(DataPath, out var st) == 0 && Libc.FStat(DataFd, out var ours) == 0 && st.Ino == ours.Ino) TryDelete(DataPath);
                var (temp, data) = CreatePrivate(Descriptor, privateDirectory);
                var old = _data;
                _data = data;
                _privatePath = temp;
                _sharedCandidate = false;
                SetAside = "a shared whole file that does not match its sha256";
                old.Dispose();
                return false;
            });
        }
    }

    private bool VerifyWholeFile()
    {
        byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
        try { return ChunkVerifier.RegionMatches(_data, 0, Descriptor.Size, Descriptor.FileHash(), scratch.AsSpan(0, ScratchSize)); }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    private static void TryDelete(string? path)
    {
        if (path is null) return;
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public void Dispose()
    {
        if (_appendFd >= 0) Libc.Close(_appendFd);
        _data.Dispose();
        _record?.Dispose();
        TryDelete(_privatePath); // a whole blob that never verified leaves nothing behind
    }
}

/// <summary>Another process evicted a blob while we opened it (internal: the open is retried).</summary>
internal sealed class EvictedWhileOpeningException() : IOException("the blob was evicted while it was being opened");
