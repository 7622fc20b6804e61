using MlArtifactFs.Fuse;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// Eviction by chunk (see the README's cache section). A chunk leaves a blob by being dropped from the
/// record first, so no process adopts it any more, and only then are its blocks freed (a hole punched).
/// What keeps that safe for those already serving it:
/// <list type="bullet">
/// <item>Other processes: every process holds a shared record lock (an open file description lock,
/// F_OFD_SETLK) on each chunk it serves from the data file, taken before it writes or adopts the chunk.
/// The evicter needs the exclusive lock on the chunk's range to drop and punch it; while anyone else
/// holds it, it only lets go of its own claim (the chunk stops being servable here) and moves on.</item>
/// <item>This process: readers pin the chunks they read from the file (<see cref="Pin"/>); the evicter
/// clears a chunk's servable bit, then looks at its pins and puts the bit back if a reader is inside.
/// Chunks inside an open file's read-ahead window (<see cref="ReadAheadGuard"/>) and blobs in use by
/// passthrough are never candidates.</item>
/// </list>
/// A process killed between the drop and the punch leaves bytes the record no longer names: never adopted,
/// rewritten when fetched again.
/// </summary>
public sealed partial class ChunkedBlob
{
    private const int PinStripes = 64;
    private readonly int[] _pins = new int[PinStripes];
    private int[]? _lastUse;                      // per chunk, CacheClock time of the last read or store; made on first use
    private int _passthroughUsers;
    private readonly List<ReadAheadGuard> _guards = [];

    /// <summary>Chunks this process serves from the data file (written or adopted here).</summary>
    public int StoredChunks => _stored.Count;

    // ---- readers -------------------------------------------------------------------------------

    /// <summary>
    /// Pins chunks [first, last] against eviction in this process, and tells whether all of them are servable
    /// now. Pair with <see cref="Unpin"/> whatever it returns.
    /// </summary>
    internal bool Pin(int first, int last)
    {
        for (int c = first; c <= last; c++) Interlocked.Increment(ref _pins[c & (PinStripes - 1)]);
        for (int c = first; c <= last; c++)
            if (!_servable.Contains(c)) return false;
        return true;
    }

    internal void Unpin(int first, int last)
    {
        for (int c = first; c <= last; c++) Interlocked.Decrement(ref _pins[c & (PinStripes - 1)]);
    }

    /// <summary>
    /// For a reply spliced from the data file: true when every chunk of the range is stored here, with a lease
    /// that keeps them from eviction until the reply was sent.
    /// </summary>
    public bool TryLeaseStored(long offset, int length, out IReadLease? lease)
    {
        lease = null;
        if (length <= 0) return false;
        var (first, last) = Descriptor.ChunksOf(offset, length);
        if (!Pin(first, last) || !IsRangeStored(offset, length))
        {
            Unpin(first, last);
            return false;
        }
        lease = new StoredLease(this, first, last);
        return true;
    }

    private sealed class StoredLease(ChunkedBlob blob, int first, int last) : IReadLease
    {
        private int _returned;

        public void Return()
        {
            if (Interlocked.Exchange(ref _returned, 1) == 0) blob.Unpin(first, last);
        }
    }

    /// <summary>Marks chunks as just used (their place in the eviction order).</summary>
    public void Touch(long offset, long length)
    {
        if (length <= 0) return;
        var uses = _lastUse ?? InitLastUse();
        int now = CacheClock.Now;
        var (first, last) = Descriptor.ChunksOf(offset, length);
        for (int c = first; c <= last; c++)
            if (uses[c] != now) uses[c] = now;
    }

    private void TouchChunk(int chunk) => (_lastUse ?? InitLastUse())[chunk] = CacheClock.Now;

    private int[] InitLastUse()
    {
        Interlocked.CompareExchange(ref _lastUse, new int[Descriptor.ChunkCount], null);
        return _lastUse!;
    }

    /// <summary>An open file's read-ahead window: its chunks are not evicted while it is registered.</summary>
    public void AddGuard(ReadAheadGuard guard)
    {
        lock (_guards) _guards.Add(guard);
    }

    public void RemoveGuard(ReadAheadGuard guard)
    {
        lock (_guards) _guards.Remove(guard);
    }

    private bool IsGuarded(int chunk)
    {
        long start = Descriptor.ChunkStart(chunk), end = Descriptor.ChunkEnd(chunk);
        lock (_guards)
            foreach (var g in _guards)
                if (g.Covers(start, end)) return true;
        return false;
    }

    /// <summary>
    /// A passthrough open: true (the kernel may read the data file directly until <see cref="EndPassthrough"/>)
    /// only while the blob is complete; no chunk of it is evicted meanwhile.
    /// </summary>
    public bool TryBeginPassthrough()
    {
        Interlocked.Increment(ref _passthroughUsers);
        if (IsComplete) return true;
        Interlocked.Decrement(ref _passthroughUsers);
        return false;
    }

    public void EndPassthrough() => Interlocked.Decrement(ref _passthroughUsers);

    // ---- the evicter ---------------------------------------------------------------------------

    /// <summary>Stored chunks that may be evicted now, with the time each was last used.</summary>
    internal void CollectCandidates(List<(int LastUse, ChunkedBlob Blob, int Chunk)> into)
    {
        if (Volatile.Read(ref _passthroughUsers) != 0 || _stored.Count == 0) return;
        var uses = _lastUse ?? InitLastUse();
        foreach (int c in _stored.Members())
            if (!IsGuarded(c)) into.Add((uses[c], this, c));
    }

    /// <summary>
    /// Evicts one stored chunk: <see cref="EvictResult.Freed"/> with the bytes punched,
    /// <see cref="EvictResult.Released"/> when another process still serves it (this one no longer does), or
    /// <see cref="EvictResult.Kept"/> when it is in use here or no longer stored.
    /// </summary>
    internal EvictResult TryEvict(int chunk, out long freed)
    {
        freed = 0;
        lock (_adoptLocks[chunk & (_adoptLocks.Length - 1)]) // no write or adoption of this chunk meanwhile
        {
            if (!_stored.Contains(chunk) || IsGuarded(chunk)) return EvictResult.Kept;
            _servable.Remove(chunk);
            ClearComplete();
            Interlocked.MemoryBarrier(); // against Pin and TryBeginPassthrough, which look at ours after changing theirs
            if (Volatile.Read(ref _pins[chunk & (PinStripes - 1)]) != 0 || Volatile.Read(ref _passthroughUsers) != 0)
            {
                _servable.Add(chunk);
                if (_stored.Count == Descriptor.ChunkCount) SetComplete();
                return EvictResult.Kept;
            }
            _stored.Remove(chunk);
            _staged.Evict(chunk);
            long start = Descriptor.ChunkStart(chunk), length = Descriptor.ChunkLength(chunk);
            LockRange(Libc.F_UNLCK, start, length, wait: false);
            if (!LockRange(Libc.F_WRLCK, start, length, wait: false)) return EvictResult.Released; // another process serves it
            try
            {
                Refresh();
                if (_recorded.Contains(chunk)) Drop(chunk); // the record first: from here on nobody adopts it
                // Whole pages only; the last chunk's tail page holds nothing else, so it goes too.
                long from = (start + Page - 1) / Page * Page;
                long to = Descriptor.ChunkEnd(chunk) == Descriptor.Size ? (start + length + Page - 1) / Page * Page : (start + length) / Page * Page;
                if (to > from && Libc.Fallocate(DataFd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, from, to - from) == 0) freed = to - from;
            }
            finally { LockRange(Libc.F_UNLCK, start, length, wait: false); }
            return EvictResult.Freed;
        }
    }

    private const long Page = 4096;

    /// <summary>Takes (or with F_UNLCK, lets go of) this process's record lock on a range of the data file.</summary>
    private unsafe bool LockRange(short type, long start, long length, bool wait)
    {
        var lk = new Libc.FLock { Type = type, Whence = 0, Start = start, Length = length };
        while (true)
        {
            if (Libc.FcntlLock(DataFd, wait ? Libc.F_OFD_SETLKW : Libc.F_OFD_SETLK, &lk) == 0) return true;
            int errno = Libc.LastErrno;
            if (errno == Libc.EINTR) continue;
            if (errno is Libc.EAGAIN or Libc.EACCES) return false; // held by another process
            // No record locks on this file system (some network file systems): nobody can coordinate, so this
            // process proceeds alone (the README says not to share such a directory between processes).
            return true;
        }
    }

    /// <summary>This process serves the chunk from the file from now on: hold the shared lock (waits for an evicter to finish).</summary>
    private void ClaimChunk(int chunk) => LockRange(Libc.F_RDLCK, Descriptor.ChunkStart(chunk), Descriptor.ChunkLength(chunk), wait: true);

    private void UnclaimChunk(int chunk) => LockRange(Libc.F_UNLCK, Descriptor.ChunkStart(chunk), Descriptor.ChunkLength(chunk), wait: false);
}

/// <summary>What <see cref="ChunkedBlob.TryEvict"/> did.</summary>
internal enum EvictResult
{
    /// <summary>Nothing: in use here (read, guarded, passthrough) or not stored.</summary>
    Kept,
    /// <summary>No longer served here, but another process still serves it: no space freed.</summary>
    Released,
    /// <summary>Dropped from the record and punched out of the file.</summary>
    Freed,
}

/// <summary>
/// The bytes an open file's reader is about to read (its position and read-ahead window): not evicted
/// while the file is open. Written by its reader, read by the evicter without a lock (a torn pair only
/// makes one decision conservative or late).
/// </summary>
public sealed class ReadAheadGuard
{
    private long _start, _end;

    public void Set(long start, long end)
    {
        Volatile.Write(ref _start, start);
        Volatile.Write(ref _end, end);
    }

    public bool Covers(long start, long end) => start < Volatile.Read(ref _end) && end > Volatile.Read(ref _start);
}

/// <summary>A coarse monotonic clock for use order: hundredths of a second since the process started.</summary>
internal static class CacheClock
{
    private static readonly long StartMs = Environment.TickCount64;
    private static readonly DateTime StartUtc = DateTime.UtcNow;

    public static int Now => (int)Math.Min(int.MaxValue, (Environment.TickCount64 - StartMs) / 10);

    public static DateTime ToUtc(int time) => StartUtc.AddMilliseconds(time * 10L);
}
