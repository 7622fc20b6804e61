using System.Buffers;
using System.Runtime.InteropServices;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// The one budget of memory for chunks. Every chunk is received into, hashed in, written from and, for a
/// while after it was stored, served from a buffer of its own: page-aligned native memory, because
/// O_DIRECT writes need the alignment and because the GC never moves or decommits it (a buffer is faulted
/// in once, not once per chunk). Rents wait while the budget is spent, so memory stays bounded for any
/// manifest and any number of readers; chunks kept resident after they were stored (<see cref="Resident"/>)
/// are let go first (they are on disk): those a reader already consumed, oldest first, then the others,
/// newest first (for a sequential reader, the farthest ahead). A rent larger than the whole budget is
/// charged the whole budget (it runs alone).
/// </summary>
public sealed class ChunkMemory(long budgetBytes) : IDisposable
{
    internal const int Alignment = 4096;

    private readonly Lock _lock = new();
    private readonly LinkedList<(long Charge, TaskCompletionSource Ready)> _waiting = []; // guarded by _lock
    private long _available = budgetBytes;                                                // guarded by _lock
    private readonly Stack<ChunkBuffer>[] _free = [new(), new(), new(), new()];           // kept for reuse by size class; guarded by _lock
    private long _freeBytes;                                                              // guarded by _lock
    private readonly LinkedList<Resident> _consumed = [], _unconsumed = [];               // guarded by _lock

    public long Budget { get; } = budgetBytes;

    /// <summary>Bytes handed out now (in flight and resident), for tests and status.</summary>
    public long InUse { get { lock (_lock) return Budget - _available; } }

    /// <summary>A chunk buffer of at least <paramref name="length"/> bytes (its Memory is exactly that long); dispose to give it back.</summary>
    public async ValueTask<ChunkBuffer> RentAsync(int length, CancellationToken cancel)
    {
        long charge = Math.Min(Capacity(length), Budget);
        TaskCompletionSource? ready = null;
        LinkedListNode<(long, TaskCompletionSource)>? node = null;
        while (true)
        {
            Resident? victim;
            lock (_lock)
            {
                if (_waiting.Count == 0 && _available >= charge)
                {
                    _available -= charge;
                    break;
                }
                victim = _waiting.Count == 0 ? TakeVictim() : null;
                if (victim is null)
                {
                    ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    node = _waiting.AddLast((charge, ready));
                    break;
                }
            }
            victim.Release(); // its buffer comes back through Give; then try again
        }
        if (ready is not null)
        {
            try { await ready.Task.WaitAsync(cancel).ConfigureAwait(false); }
            catch (OperationCanceledException)
            {
                bool granted;
                lock (_lock)
                {
                    granted = node!.List is null; // already handed its charge
                    if (!granted) _waiting.Remove(node);
                }
                if (granted) Give(null, charge);
                throw;
            }
        }
        return Take(length, charge);
    }

    /// <summary>Buffers come in whole pages, in four size classes' worth of reuse.</summary>
    private static long Capacity(int length) => Math.Max(Alignment, (length + (long)Alignment - 1) / Alignment * Alignment);

    private ChunkBuffer Take(int length, long charge)
    {
        long capacity = Capacity(length);
        lock (_lock)
        {
            foreach (var stack in _free)
                if (stack.TryPeek(out var kept) && kept.Capacity >= capacity && kept.Capacity <= 2 * capacity)
                {
                    stack.Pop();
                    _freeBytes -= kept.Capacity;
                    kept.Reuse(length, charge);
                    return kept;
                }
            // Kept buffers of other sizes go before a new one is made, so kept + handed out stays within the budget.
            foreach (var stack in _free)
                while (_freeBytes + (Budget - _available) > Budget && stack.TryPop(out var old))
                {
                    _freeBytes -= old.Capacity;
                    old.Free();
                }
        }
        return ChunkBuffer.IsSlabbed(capacity) ? TakeFromNewSlab(capacity, length, charge) : new ChunkBuffer(this, capacity, length, charge);
    }

    /// <summary>
    /// A buffer smaller than a huge page comes from a new 2 MiB slab on a huge page, cut into buffers of its
    /// size; the others are kept for reuse at once (the budget may be exceeded by less than one slab). With
    /// 1 MiB chunks, buffers on 4 KiB pages cost a fault per page on first touch: measured, 37,000 faults
    /// and 9 % of a cold 1 GiB read's daemon CPU.
    /// </summary>
    private unsafe ChunkBuffer TakeFromNewSlab(long capacity, int length, long charge)
    {
        var slab = new ChunkBuffer.Slab((int)(ChunkBuffer.HugePage / capacity));
        var first = new ChunkBuffer(this, slab, 0, capacity, length, charge);
        lock (_lock)
        {
            var stack = _free.FirstOrDefault(s => !s.TryPeek(out var top) || top.Capacity == capacity) ?? _free[0];
            for (int i = 1; i < slab.Pieces; i++)
            {
                stack.Push(new ChunkBuffer(this, slab, i, capacity, 0, 0));
                _freeBytes += capacity;
            }
        }
        return first;
    }

    internal void Give(ChunkBuffer? buffer, long charge)
    {
        List<TaskCompletionSource>? wake = null;
        Resident? victim = null;
        lock (_lock)
        {
            _available += charge;
            if (buffer is not null)
            {
                if (_freeBytes + buffer.Capacity + (Budget - _available) <= Budget)
                {
                    var stack = _free.FirstOrDefault(s => !s.TryPeek(out var top) || top.Capacity == buffer.Capacity) ?? _free[0];
                    stack.Push(buffer);
                    _freeBytes += buffer.Capacity;
                }
                else buffer.Free();
            }
            // First come, first served: a big rent at the head is not starved by small ones behind it.
            while (_waiting.First is { } first && _available >= first.Value.Charge)
            {
                _available -= first.Value.Charge;
                _waiting.RemoveFirst();
                (wake ??= []).Add(first.Value.Ready);
            }
            if (_waiting.Count > 0) victim = TakeVictim(); // someone still waits: a resident chunk makes room
        }
        if (wake is not null) foreach (var w in wake) w.TrySetResult();
        victim?.Release(); // gives its buffer back through this method, which serves the next waiter
    }

    // ---- chunks kept resident after they were stored ------------------------------------------------

    /// <summary>A stored chunk whose buffer is kept to serve reads from memory until the budget needs it back.</summary>
    internal abstract class Resident
    {
        internal LinkedListNode<Resident>? Node; // guarded by the pool's lock
        internal bool Consumed;                  // guarded by the pool's lock

        /// <summary>Lets the buffer go (the chunk is read from disk from then on); called outside the pool's lock.</summary>
        public abstract void Release();
    }

    internal void AddResident(Resident resident)
    {
        Resident? victim;
        lock (_lock)
        {
            if (resident.Node is not null) return;
            resident.Node = _unconsumed.AddLast(resident);
            // Rents that queued while every buffer was in flight wait for a Give; a buffer turning resident
            // gives nothing back by itself, so one is let go now (else all fetches wait on each other).
            victim = _waiting.Count > 0 ? TakeVictim() : null;
        }
        victim?.Release();
    }

    /// <summary>A reader copied the chunk's last bytes: it goes first when memory is needed.</summary>
    internal void MarkConsumed(Resident resident)
    {
        lock (_lock)
        {
            if (resident.Node is null || resident.Consumed) return;
            _unconsumed.Remove(resident.Node);
            resident.Consumed = true;
            _consumed.AddLast(resident.Node);
        }
    }

    internal void RemoveResident(Resident resident)
    {
        lock (_lock)
        {
            if (resident.Node is null) return;
            resident.Node.List!.Remove(resident.Node);
            resident.Node = null;
        }
    }

    /// <summary>The resident chunk to let go next (under _lock), taken off its list; null when none is left.</summary>
    private Resident? TakeVictim()
    {
        var node = _consumed.First ?? _unconsumed.Last;
        if (node is null) return null;
        node.List!.Remove(node);
        node.Value.Node = null;
        return node.Value;
    }

    public void Dispose()
    {
        lock (_lock)
        {
            foreach (var stack in _free)
                while (stack.TryPop(out var buffer)) buffer.Free();
            _freeBytes = 0;
        }
    }
}

/// <summary>
/// A page-aligned native buffer from <see cref="ChunkMemory"/>. Dispose gives it back (exactly once);
/// whoever owns it last (a fetch, or the blob serving it resident) disposes it.
/// </summary>
public sealed unsafe class ChunkBuffer : MemoryManager<byte>
{
    private readonly ChunkMemory _pool;
    private byte* _pointer;
    private int _length;
    private long _charge;
    private int _returned;

    internal const long HugePage = 2 << 20;

    /// <summary>One huge page shared by several buffers; its memory goes back once every piece is freed.</summary>
    internal sealed class Slab(int pieces)
    {
        public readonly int Pieces = pieces;
        public readonly byte* Base = AllocateHuge(HugePage);
        public int Live = pieces;
    }

    private readonly Slab? _slab;

    /// <summary>Sizes cut from huge-page slabs: smaller than a huge page and dividing it.</summary>
    internal static bool IsSlabbed(long capacity) => capacity < HugePage && HugePage % capacity == 0;

    internal ChunkBuffer(ChunkMemory pool, long capacity, int length, long charge)
    {
        _pool = pool;
        Capacity = capacity;
        // Buffers of 2 MiB and more on transparent huge pages: a new buffer's first touch (the socket
        // receive into it) costs one fault per 2 MiB instead of 512 (measured: 36,000 faults, 11 % of a cold
        // 1 GiB read's daemon CPU, with 4 KiB pages).
        bool huge = capacity >= HugePage && capacity % HugePage == 0;
        _pointer = huge ? AllocateHuge(capacity) : (byte*)NativeMemory.AlignedAlloc((nuint)capacity, ChunkMemory.Alignment);
        _length = length;
        _charge = charge;
    }

    internal ChunkBuffer(ChunkMemory pool, Slab slab, int piece, long capacity, int length, long charge)
    {
        _pool = pool;
        _slab = slab;
        Capacity = capacity;
        _pointer = slab.Base + piece * capacity;
        _length = length;
        _charge = charge;
    }

    private static byte* AllocateHuge(long bytes)
    {
        var pointer = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, (nuint)HugePage);
        Libc.Madvise(pointer, (nuint)bytes, Libc.MADV_HUGEPAGE); // best effort: "never" in the system setting wins
        return pointer;
    }

    public long Capacity { get; }

    internal ChunkMemory Pool => _pool;

    /// <summary>The start of the buffer (page-aligned).</summary>
    public byte* Pointer => _pointer;

    internal void Reuse(int length, long charge)
    {
        _length = length;
        _charge = charge;
        _returned = 0;
    }

    public override Span<byte> GetSpan() => new(_pointer, _length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

    public override void Unpin() { }

    /// <summary>Gives the buffer back to the pool (once; later calls do nothing).</summary>
    public void Dispose() => ((IDisposable)this).Dispose();

    protected override void Dispose(bool disposing)
    {
        if (Interlocked.Exchange(ref _returned, 1) != 0) return;
        _pool.Give(this, _charge);
    }

    /// <summary>Gives the native memory back to the system (the pool no longer keeps this buffer).</summary>
    internal void Free()
    {
        if (_pointer is null) return;
        if (_slab is null) NativeMemory.AlignedFree(_pointer);
        else if (Interlocked.Decrement(ref _slab.Live) == 0) NativeMemory.AlignedFree(_slab.Base);
        _pointer = null;
    }
}
