using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// A blob whose manifest lists chunk hashes: a sparse data file shared by every process on the cache
/// directory, and its <see cref="ChunkRecord"/>. A chunk may be served by this process
/// (<see cref="IsServable"/>) only once it verified against the descriptor's hash here: written by
/// <see cref="WriteVerified"/> from a <see cref="VerifiedChunk"/>, or adopted by <see cref="TryAdopt"/>,
/// which hashes what another process (or an earlier run) recorded. Only verified bytes are ever
/// written into the data file, and a region the record names is never written, truncated or punched:
/// a damaged one is first dropped from the record, then rewritten.
/// <para>
/// Verified chunks are written with O_DIRECT from the page-aligned buffer they were verified in (where the
/// file system allows it): the bytes skip the page cache, and readers keep reading them from that buffer
/// while the chunk memory budget keeps it resident (<see cref="StagedChunks"/>).
/// </para>
/// <para>Threading: bits are tested without locks; record reads and appends are under <c>_recordLock</c>;
/// appends are single O_APPEND writes (atomic between processes).</para>
/// </summary>
public sealed partial class ChunkedBlob : CachedBlob
{
    private const int ScratchSize = 256 << 10;
    private const int WriteSlice = 256 << 10;

    private readonly SafeFileHandle _data;
    private readonly SafeFileHandle _record;
    private int _appendFd = -1;                      // the record, O_APPEND
    private int _directFd = -1;                      // the data file again, O_DIRECT (-1: not supported by this file system)
    private volatile bool _directRefused;            // a direct write was refused: the page cache from then on (the fd stays open until Dispose)
    private int _directWriters;                      // writes using _directFd now; the fd is closed once the blob is complete and none is left
    private readonly ChunkSet _servable;             // verified in this process: may be served (from memory while staged)
    private readonly ChunkSet _stored;               // verified and on disk (written or adopted): counts for completeness
    private readonly ChunkSet _recorded;             // named Verified by the record (a hint: adopt before serving)
    private readonly StagedChunks _staged = new();
    private readonly Lock _recordLock = new();
    private long _recordEnd;                         // guarded by _recordLock
    private readonly Lock[] _adoptLocks = [.. Enumerable.Range(0, 64).Select(_ => new Lock())]; // per chunk stripe: one write, adoption or eviction at a time

    private ChunkedBlob(BlobDescriptor descriptor, string dataPath, string recordPath, SafeFileHandle data, SafeFileHandle record)
        : base(descriptor, dataPath)
    {
        RecordPath = recordPath;
        _data = data;
        _record = record;
        _servable = new ChunkSet(descriptor.ChunkCount);
        _stored = new ChunkSet(descriptor.ChunkCount);
        _recorded = new ChunkSet(descriptor.ChunkCount);
    }

    public string RecordPath { get; }
    internal override string? UsePath => RecordPath;
    public override int DataFd => CacheFiles.Fd(_data);
    public override int ServableChunks => _servable.Count;
    public override bool AllRecorded => Descriptor.ChunkCount > 0 && _recorded.Count == Descriptor.ChunkCount;

    /// <summary>The record names this chunk as verified (by us, another process or an earlier run).</summary>
    public override bool IsRecorded(int chunk) => _recorded.Contains(chunk);

    public override bool IsServable(int chunk) => _servable.Contains(chunk);

    /// <summary>
    /// Opens or creates a chunked blob in <paramref name="directory"/>. Called under the blob's lock
    /// file, so processes opening it at once never see a half-made pair of files.
    /// </summary>
    internal static ChunkedBlob Open(BlobDescriptor d, string directory)
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
            var blob = new ChunkedBlob(d, dataPath, recordPath, data, record!) { SetAside = setAside };
            try
            {
                // Shared lock while open: a process evicting the cache skips blobs someone has open. One that
                // evicted it between our open and our lock has unlinked what we hold: the caller opens again.
                Libc.Flock(CacheFiles.Fd(data), Libc.LOCK_SH);
                if (Libc.Stat(dataPath, out var named) != 0 || Libc.FStat(CacheFiles.Fd(data), out var held) != 0 || named.Ino != held.Ino || named.Dev != held.Dev)
                    throw new EvictedWhileOpeningException();
                blob._appendFd = CacheFiles.OpenAppend(recordPath);
                blob._directFd = CacheFiles.OpenDirect(dataPath, data);
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

    // ---- reading -------------------------------------------------------------------------------

    /// <summary>
    /// Reads servable bytes: from memory for chunks verified a moment ago whose write has not landed yet
    /// (<see cref="Stage"/>), else pread from the data file. -1 when a chunk of the range is not servable
    /// (evicted since the caller looked): the caller fetches it again.
    /// </summary>
    public override int Read(long offset, Span<byte> destination)
    {
        if (destination.IsEmpty) return 0;
        var (first, last) = Descriptor.ChunksOf(offset, Math.Min(destination.Length, Descriptor.Size - offset));
        try
        {
            if (!Pin(first, last)) return -1;
            if (_staged.IsEmpty) return ReadFile(_data, offset, destination);
            int total = 0;
            long end = Math.Min(offset + destination.Length, Descriptor.Size);
            while (offset + total < end)
            {
                long at = offset + total;
                int chunk = Descriptor.ChunkOf(at);
                int take = (int)(Math.Min(Descriptor.ChunkEnd(chunk), end) - at);
                var piece = destination.Slice(total, take);
                if (_staged.TryCopy(chunk, (int)(at - Descriptor.ChunkStart(chunk)), piece, DataPath))
                {
                    total += take;
                    continue;
                }
                int n = ReadFile(_data, at, piece); // stored: on disk
                total += n;
                if (n < take) break;
            }
            return total;
        }
        finally { Unpin(first, last); }
    }

    /// <summary>
    /// Lends the memory a range lies in when it is one chunk held in memory (staged or resident), for a
    /// reply to be written from it without a copy; false otherwise (read it with <see cref="Read"/>).
    /// </summary>
    public bool TryBorrow(long offset, int length, out nint address, out Fuse.IReadLease? lease)
    {
        address = 0;
        lease = null;
        if (length <= 0 || _staged.IsEmpty) return false;
        var (first, last) = Descriptor.ChunksOf(offset, length);
        return first == last && _servable.Contains(first)
               && _staged.TryBorrow(first, (int)(offset - Descriptor.ChunkStart(first)), length, DataPath, out address, out lease);
    }

    /// <summary>True when every chunk of [offset, offset+length) is on disk (stored, not only staged): it may be read from the file directly.</summary>
    public bool IsRangeStored(long offset, long length)
    {
        if (IsComplete || length <= 0) return true;
        var (first, last) = Descriptor.ChunksOf(offset, length);
        for (int c = first; c <= last; c++)
            if (!_stored.Contains(c) || !_servable.Contains(c)) return false;
        return true;
    }

    // ---- verified writes, adoption, the record -------------------------------------------------

    /// <summary>
    /// Makes a chunk that just verified in memory servable in this process at once, read from
    /// <paramref name="chunk"/>'s buffer until <see cref="WriteVerified"/> has stored it (the caller keeps the
    /// buffer until then). Other processes, passthrough and completeness see it only once stored.
    /// </summary>
    public void Stage(in VerifiedChunk chunk, ChunkBuffer? owner = null)
    {
        CheckOwner(chunk);
        _staged.Stage(chunk.Index, chunk.Bytes, owner); // owned from here on, even when the chunk is on disk already
        _servable.Add(chunk.Index);
    }

    /// <summary>
    /// Stores a chunk that verified in memory. When the record already names it (another process got
    /// there first) the region is not written: equal bytes on disk are adopted as they are, different
    /// ones are damage, dropped from the record before they are rewritten. A full disk throws
    /// <see cref="CacheFullException"/> with nothing recorded and nothing punched.
    /// </summary>
    public void WriteVerified(in VerifiedChunk chunk)
    {
        CheckOwner(chunk);
        int c = chunk.Index;
        bool stored = false, claimed = false;
        lock (_adoptLocks[c & (_adoptLocks.Length - 1)])
        {
            try
            {
                if (_stored.Contains(c)) { stored = true; return; }
                ClaimChunk(c); // before the record is read: an evicter of another process finishes first
                claimed = true;
                long start = Descriptor.ChunkStart(c);
                Refresh();
                if (_recorded.Contains(c))
                {
                    if (DiskEquals(start, chunk.Bytes.Span))
                    {
                        MarkStored(c);
                        stored = true;
                        return;
                    }
                    Drop(c);
                }
                try { Write(chunk.Bytes, start); }
                catch (IOException e) when (CacheFiles.IsDiskFull(e))
                {
                    throw new CacheFullException($"the cache disk is full ({DataPath})", e);
                }
                AppendEntry((uint)c, ChunkRecord.Verified, Descriptor.ChunkHash(c));
                _recorded.Add(c);
                MarkStored(c);
                stored = true;
            }
            finally
            {
                if (stored)
                {
                    TouchChunk(c);
                    _staged.Stored(c); // served from memory while it stays resident; an unowned buffer is free once this returns
                }
                else
                {
                    if (claimed) UnclaimChunk(c);
                    _servable.Remove(c); // a reader that saw it staged gets an error, never the unwritten disk
                    _staged.Failed(c);
                }
            }
        }
    }

    /// <summary>
    /// Writes verified bytes at <paramref name="start"/>: the page-aligned part with O_DIRECT when the
    /// bytes lie in a page-aligned buffer (no page-cache copy: measured, the cache-file write was 13 % of a
    /// cold read's daemon CPU), the rest through the page cache. Buffered writes go in 256 KiB slices:
    /// measured on ext4 (Linux 6.18), one 4 MiB pwrite per chunk cost the daemon twice the CPU of a cold
    /// load (page-cache copy and inode-lock spinning between runs).
    /// </summary>
    private unsafe void Write(ReadOnlyMemory<byte> memory, long start)
    {
        int direct = 0;
        Interlocked.Increment(ref _directWriters);
        int fd = Volatile.Read(ref _directFd);
        try
        {
            if (fd >= 0 && !_directRefused && start % ChunkMemory.Alignment == 0 && MemoryMarshal.TryGetMemoryManager(memory, out ChunkBuffer? buffer, out int index, out _)
                && ((nint)(buffer.Pointer + index)) % ChunkMemory.Alignment == 0)
            {
                int length = memory.Length / ChunkMemory.Alignment * ChunkMemory.Alignment;
                while (direct < length)
                {
                    nint n = Libc.PWrite(fd, buffer.Pointer + index + direct, length - direct, start + direct);
                    if (n > 0)
                    {
                        direct += (int)n;
                        continue;
                    }
                    int errno = Libc.LastErrno;
                    if (n < 0 && errno == Libc.EINTR) continue;
                    if (n < 0 && CacheFiles.IsDiskFullErrno(errno)) throw new IOException(Libc.StrError(errno), errno);
                    // Refused (EINVAL: an alignment this device does not take) or no progress: the page cache from here on.
                    _directRefused = true;
                    break;
                }
            }
        }
        finally
        {
            if (Interlocked.Decrement(ref _directWriters) == 0) CloseDirectWhenIdle();
        }
        var bytes = memory.Span;
        for (int done = direct; done < bytes.Length; done += WriteSlice)
            RandomAccess.Write(_data, bytes.Slice(done, Math.Min(WriteSlice, bytes.Length - done)), start + done);
    }

    private void CheckOwner(in VerifiedChunk chunk)
    {
        if (chunk.Blob.Name != Descriptor.Name)
            throw new ArgumentException($"a chunk verified for blob {chunk.Blob.Name} offered to {Descriptor.Name}", nameof(chunk));
    }

    private void MarkStored(int chunk)
    {
        _servable.Add(chunk);
        if (!_stored.Add(chunk) || _stored.Count != Descriptor.ChunkCount) return;
        SetComplete();
        CloseDirectWhenIdle(); // nothing more will be written: give the descriptor back
    }

    /// <summary>
    /// Closes the O_DIRECT descriptor once the blob is complete and no write uses it. Safe without a lock:
    /// only a chunk not yet stored is ever written, so once the blob is complete no new write starts.
    /// </summary>
    private void CloseDirectWhenIdle()
    {
        if (!IsComplete || Volatile.Read(ref _directWriters) != 0) return;
        int fd = Interlocked.Exchange(ref _directFd, -1);
        if (fd >= 0) Libc.Close(fd);
    }

    /// <summary>
    /// Makes a recorded chunk servable once its bytes on disk hash to the descriptor's chunk hash.
    /// False when it is not recorded, or (then counted in <see cref="CachedBlob.DamagedChunks"/> and dropped
    /// from the record) when its bytes do not match: the caller fetches it again.
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
            ClaimChunk(chunk); // then read the record again: an evicter of another process may have dropped it meanwhile
            Refresh();
            if (!IsRecorded(chunk))
            {
                UnclaimChunk(chunk);
                return false;
            }
            byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
            try
            {
                if (ChunkVerifier.RegionMatches(_data, Descriptor.ChunkStart(chunk), Descriptor.ChunkLength(chunk), Descriptor.Algorithm, Descriptor.ChunkHash(chunk),
                        scratch.AsSpan(0, ScratchSize)))
                {
                    MarkStored(chunk);
                    TouchChunk(chunk);
                    return true;
                }
            }
            finally { ArrayPool<byte>.Shared.Return(scratch); }
            Drop(chunk);
            UnclaimChunk(chunk);
            CountDamage();
            return false;
        }
    }

    /// <summary>Picks up entries other processes appended since we last looked.</summary>
    public void Refresh()
    {
        lock (_recordLock)
            _recordEnd = ChunkRecord.ReadEntries(_record, Math.Max(_recordEnd, ChunkRecord.HeaderSize), ApplyEntry);
    }

    private void ApplyEntry(ChunkRecord.Entry entry)
    {
        if (entry.Chunk >= (uint)Descriptor.ChunkCount) return; // input: an index out of range names nothing
        int c = (int)entry.Chunk;
        if (entry.Kind == ChunkRecord.Dropped) _recorded.Remove(c);
        else if (entry.Digest.AsSpan().SequenceEqual(Descriptor.ChunkHash(c))) _recorded.Add(c);
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

    private unsafe void AppendEntry(uint chunk, uint kind, ReadOnlySpan<byte> sha256)
    {
        byte* entry = stackalloc byte[ChunkRecord.EntrySize];
        ChunkRecord.WriteEntry(new Span<byte>(entry, ChunkRecord.EntrySize), chunk, kind, sha256);
        if (Libc.Write(_appendFd, entry, ChunkRecord.EntrySize) == ChunkRecord.EntrySize) return;
        int errno = Libc.LastErrno;
        // Disk full: a verified chunk stays servable in this process, it just will not survive a restart.
        // A drop that cannot be recorded is held in memory (not recorded here) and never served unchecked.
        if (CacheFiles.IsDiskFullErrno(errno)) return;
        throw new IOException($"cannot append to {RecordPath}: {Libc.StrError(errno)}");
    }

    /// <summary>
    /// Allocates disk blocks for a range about to be fetched (best effort: a full disk shows at the write).
    /// Safe on a shared file: it only fills holes, never changes a byte; writes into allocated blocks skip
    /// ext4's per-block delayed-allocation work.
    /// </summary>
    public void Preallocate(long offset, long length) =>
        Libc.Fallocate(DataFd, Libc.FALLOC_FL_KEEP_SIZE, offset, length);

    public override void Dispose()
    {
        if (_appendFd >= 0) Libc.Close(_appendFd);
        int directFd = Interlocked.Exchange(ref _directFd, -1);
        if (directFd >= 0) Libc.Close(directFd);
        _staged.Clear();
        _data.Dispose();
        _record.Dispose();
    }
}
