using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;

namespace MlArtifactFs.Cache;

/// <summary>
/// The one bound of a cache directory, kept by every process using it: a page (<c>ROOT/budget</c>, ours,
/// 0600) mapped shared into each, updated with atomic instructions. It holds the bytes the cache's files
/// take on disk (an estimate every writer and evicter adjusts, re-measured now and then), each process's
/// slot (its bound, the bytes it promised to fetches in flight, a heartbeat) and a pressure counter a
/// process bumps when it cannot get under the bound by itself: the others then evict their own least
/// recently used chunks. The bound in force is the smallest of the live processes' bounds. The file is a
/// hint, never proof: a wrong value costs an eviction too many or too few, never a byte.
/// </summary>
internal sealed unsafe class CacheBudget : IDisposable
{
    private const long Magic = 0x3164756273666c6d; // "mlfsbud1"
    private const int FileSize = 4096, SlotsOffset = 64, SlotSize = 32, Slots = (FileSize - SlotsOffset) / SlotSize;
    private const long StaleMs = 10_000; // a slot without a heartbeat this long belongs to a dead process

    private readonly MemoryMappedFile? _file;
    private readonly MemoryMappedViewAccessor? _view;
    private readonly byte* _base;
    private long* _slot;
    private readonly long _token = Math.Max(1, BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8)) & long.MaxValue);

    public CacheBudget(string root, long bound)
    {
        OwnBound = bound;
        string path = Path.Combine(root, "budget");
        try
        {
            using var handle = CacheFiles.OpenExisting(path) ?? CacheFiles.Create(path) ?? CacheFiles.OpenExisting(path)
                ?? throw new IOException($"{path} vanished while being opened");
            if (RandomAccess.GetLength(handle) < FileSize) RandomAccess.SetLength(handle, FileSize); // zeros; idempotent between processes
            using var stream = new FileStream(handle, FileAccess.ReadWrite);
            _file = MemoryMappedFile.CreateFromFile(stream, null, FileSize, MemoryMappedFileAccess.ReadWrite, HandleInheritability.None, leaveOpen: true);
            _view = _file.CreateViewAccessor(0, FileSize);
            byte* pointer = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            _base = pointer + _view.PointerOffset;
            Shared = true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or UnsafeCachePathException)
        {
            // Not shareable (a file system without shared mappings, a file not ours): this process keeps its bound alone.
            _base = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(FileSize);
            Problem = e.Message;
        }
        if (Interlocked.CompareExchange(ref Long(0), Magic, 0) is not 0 and not Magic)
        {
            // Not a budget page of ours (damaged, another format): start it afresh.
            for (int i = 8; i < FileSize; i += 8) Volatile.Write(ref Long(i), 0);
            Volatile.Write(ref Long(0), Magic);
        }
        _slot = ClaimSlot();
        Heartbeat();
    }

    /// <summary>Whether other processes on the directory see this budget (else it is this process's alone).</summary>
    public bool Shared { get; }

    /// <summary>Why the budget is not shared (null when it is).</summary>
    public string? Problem { get; }

    /// <summary>This process's --cache-size.</summary>
    public long OwnBound { get; }

    private ref long Long(int offset) => ref *(long*)(_base + offset);
    private ref long Allocated => ref Long(8);
    private ref long PressureCount => ref Long(16);

    private static long NowMs => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private long* ClaimSlot()
    {
        long now = NowMs;
        for (int i = 0; i < Slots; i++)
        {
            long* slot = (long*)(_base + SlotsOffset + i * SlotSize);
            long owner = Volatile.Read(ref slot[0]);
            if (owner != 0 && now - Volatile.Read(ref slot[1]) < StaleMs) continue;
            if (Interlocked.CompareExchange(ref slot[0], _token, owner) != owner) continue;
            Volatile.Write(ref slot[3], 0); // a dead process's promises lapse with it
            Volatile.Write(ref slot[2], OwnBound);
            return slot;
        }
        // More live processes than slots: share the last one's slot (its bound still counts).
        return (long*)(_base + SlotsOffset + (Slots - 1) * SlotSize);
    }

    /// <summary>Says this process is alive (its bound and reservations count); every second or so.</summary>
    public void Heartbeat()
    {
        if (Volatile.Read(ref _slot[0]) != _token) _slot = ClaimSlot(); // taken over after a long stall: claim one again
        Volatile.Write(ref _slot[2], OwnBound);
        Volatile.Write(ref _slot[1], NowMs);
    }

    /// <summary>The bound in force: the smallest of the live processes' bounds.</summary>
    public long Bound
    {
        get
        {
            long bound = OwnBound, now = NowMs;
            ForEachLive(slot => bound = Math.Min(bound, Math.Max(1, Volatile.Read(ref slot[2]))), now);
            return bound;
        }
    }

    /// <summary>Bytes on disk plus bytes promised to fetches in flight, all live processes together.</summary>
    public long Used
    {
        get
        {
            long reserved = 0;
            ForEachLive(slot => reserved += Math.Max(0, Volatile.Read(ref slot[3])), NowMs);
            return Math.Max(0, Volatile.Read(ref Allocated)) + reserved;
        }
    }

    public long OnDisk => Math.Max(0, Volatile.Read(ref Allocated));

    private void ForEachLive(SlotAction action, long now)
    {
        for (int i = 0; i < Slots; i++)
        {
            long* slot = (long*)(_base + SlotsOffset + i * SlotSize);
            if (Volatile.Read(ref slot[0]) != 0 && (slot == _slot || now - Volatile.Read(ref slot[1]) < StaleMs)) action(slot);
        }
    }

    private delegate void SlotAction(long* slot);

    /// <summary>Other processes on the directory now (they evict their own chunks when pressed).</summary>
    public int OthersLive
    {
        get
        {
            int others = 0;
            ForEachLive(slot => { if (slot != _slot) others++; }, NowMs);
            return others;
        }
    }

    public void Reserve(long bytes) => Interlocked.Add(ref _slot[3], bytes);

    /// <summary>A fetch ended: its promise is gone, and what it wrote is on disk.</summary>
    public void Settle(long reserved, long written)
    {
        Interlocked.Add(ref _slot[3], -reserved);
        Interlocked.Add(ref Allocated, written);
    }

    public void AddOnDisk(long bytes) => Interlocked.Add(ref Allocated, bytes);

    /// <summary>A fresh measure of the directory (st_blocks of every cache file).</summary>
    public void SetOnDisk(long measured) => Volatile.Write(ref Allocated, measured);

    /// <summary>The pressure counter: a change means someone could not get under the bound alone.</summary>
    public long Pressure => Volatile.Read(ref PressureCount);

    public void SignalPressure() => Interlocked.Increment(ref PressureCount);

    public void Dispose()
    {
        if (Volatile.Read(ref _slot[0]) == _token)
        {
            Volatile.Write(ref _slot[3], 0);
            Interlocked.CompareExchange(ref _slot[0], 0, _token);
        }
        if (_view is not null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _view.Dispose();
            _file!.Dispose();
        }
        else System.Runtime.InteropServices.NativeMemory.Free(_base);
    }
}
