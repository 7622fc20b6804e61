using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// Eviction: reservations for fetches in flight, and least-recently-used chunks (and idle or closed blobs)
/// evicted until the directory is under the one bound its processes share (<see cref="CacheBudget"/>).
/// </summary>
public sealed partial class BlobCache
{
    /// <summary>
    /// Makes room for <paramref name="bytes"/> about to be written, evicting what is least recently used.
    /// The bytes stay reserved until <see cref="ReleaseReservation"/>, so concurrent fetches (of every
    /// process) cannot together overshoot the bound.
    /// </summary>
    public ValueTask EnsureRoomAsync(long bytes)
    {
        if (Volatile.Read(ref _disposed) != 0) throw new ObjectDisposedException(nameof(BlobCache));
        _budget.Reserve(bytes);
        return _budget.Used <= _budget.Bound ? ValueTask.CompletedTask : EvictAsync(waitForOthers: true);
    }

    /// <summary>A fetch that reserved room finished: its bytes are now on disk (or were never written).</summary>
    public void ReleaseReservation(long bytes)
    {
        if (Volatile.Read(ref _disposed) == 0) _budget.Settle(bytes, bytes);
    }

    /// <summary>
    /// Gets the directory under its bound: first by this process's own candidates, down to a little under
    /// the bound (so passes are not made per chunk); then, if that is not enough, by asking the others
    /// (the pressure counter) and waiting a moment for them.
    /// </summary>
    private async ValueTask EvictAsync(bool waitForOthers)
    {
        await _evicting.WaitAsync().ConfigureAwait(false);
        try
        {
            if (Volatile.Read(ref _disposed) != 0) return;
            long bound = _budget.Bound;
            if (_budget.Used <= bound) return;
            EvictOwn(bound - Math.Min(bound / 16, 64L << 20));
            if (_budget.Used <= bound) return;
            if (_budget.OthersLive > 0)
            {
                _budget.SignalPressure();
                _pressureSeen = _budget.Pressure;
                for (int i = 0; waitForOthers && i < 20 && _budget.Used > bound; i++) await Task.Delay(10).ConfigureAwait(false);
            }
            if (_budget.Used > bound && Interlocked.Exchange(ref _warnedOver, 1) == 0)
                _logger.LogWarning("cache {Root} is over its bound ({Used} > {Bound} bytes): what is left is in use (read right now, inside an open file's read-ahead, or open in passthrough); reads go on",
                    Root, _budget.Used, bound);
        }
        finally { _evicting.Release(); }
    }

    /// <summary>One pass over this process's candidates, least recently used first, until the directory is at <paramref name="target"/>.</summary>
    private void EvictOwn(long target)
    {
        if (Environment.TickCount64 - _walkedAt > 10_000) WalkDirectory();
        var chunks = new List<(int LastUse, ChunkedBlob Blob, int Chunk)>();
        List<(ChunkedBlob Blob, bool Idle)> blobs;
        lock (_lock)
            blobs = [.. _byBlob.Keys.OfType<ChunkedBlob>().Select(b => (b, _idle.Exists(e => e.Blob == b)))];
        foreach (var (blob, _) in blobs) blob.CollectCandidates(chunks);
        chunks.Sort((a, b) => a.LastUse.CompareTo(b.LastUse));
        int nextBlob = 0, nextChunk = 0;
        while (_budget.Used > target && (nextBlob < _closedBlobs.Count || nextChunk < chunks.Count))
        {
            bool blobFirst = nextChunk == chunks.Count
                             || (nextBlob < _closedBlobs.Count && _closedBlobs[nextBlob].LastUse <= CacheClock.ToUtc(chunks[nextChunk].LastUse));
            if (blobFirst) EvictClosed(_closedBlobs[nextBlob++]);
            else
            {
                var (_, blob, chunk) = chunks[nextChunk++];
                if (blob.TryEvict(chunk, out long freed) != EvictResult.Freed) continue;
                _budget.AddOnDisk(-freed);
                ChunkEvicted?.Invoke(blob, chunk, freed);
            }
        }
        _closedBlobs.RemoveRange(0, nextBlob);
        // A blob whose every chunk went, and that nobody reads: its files go too.
        foreach (var (blob, idle) in blobs)
            if (idle && blob.StoredChunks == 0) EvictClosed(new BlobOnDisk(blob.DataPath, blob.RecordPath, 0, DateTime.MinValue));
    }

    /// <summary>Deletes a blob this process does not read (an idle one is closed first); skipped when another process has it open.</summary>
    private void EvictClosed(BlobOnDisk candidate)
    {
        lock (_lock)
        {
            if (_open.Values.Any(e => e.Blob.DataPath == candidate.DataPath)) return; // opened again since
            int idle = _idle.FindIndex(e => e.Blob.DataPath == candidate.DataPath);
            if (idle >= 0) RetireIdle(idle); // its own shared lock would block the delete
        }
        long allocated = Libc.LStat(candidate.DataPath, out var st) == 0 ? st.Blocks * 512 : candidate.Allocated;
        if (!TryDelete(candidate.DataPath, candidate.RecordPath, allocated)) return;
        _budget.AddOnDisk(-allocated);
    }

    /// <summary>Measures the directory (the shared estimate is reset to it) and lists the blobs not open here, oldest first.</summary>
    private void WalkDirectory()
    {
        var onDisk = EnumerateBlobs().ToList();
        _budget.SetOnDisk(onDisk.Sum(b => b.Allocated));
        HashSet<string> open;
        lock (_lock) open = new HashSet<string>(_byBlob.Keys.Select(b => b.DataPath), StringComparer.Ordinal);
        _closedBlobs = [.. onDisk.Where(b => !open.Contains(b.DataPath)).OrderBy(b => b.LastUse)];
        _walkedAt = Environment.TickCount64;
    }

    /// <summary>Every 50 ms: the heartbeat of this process's share of the budget, and eviction when another process asks for it.</summary>
    private void Watch()
    {
        if (++_watchTicks % 20 == 0) _budget.Heartbeat();
        long pressure = _budget.Pressure;
        if (pressure == Interlocked.Exchange(ref _pressureSeen, pressure) || _budget.Used <= _budget.Bound) return;
        _ = Task.Run(async () =>
        {
            try { await EvictAsync(waitForOthers: false).ConfigureAwait(false); }
            catch (Exception e) { _logger.LogDebug("cache: eviction asked for by another process failed: {Error}", e.Message); }
        });
    }

    /// <summary>A chunk this process evicted (dropped and punched; the bytes freed): the index and the fleet forget it here.</summary>
    public event Action<ChunkedBlob, int, long>? ChunkEvicted;

    /// <summary>A blob this process deleted (eviction, `cache clear`): its chunks are no longer held here.</summary>
    public event Action<string, long>? BlobEvicted;
}
