namespace MlArtifactFs.Fetching;

/// <summary>
/// The global budget: at most <c>slots</c> ranged GETs at once (bounding connections and buffer
/// memory however many files stream), handed out by priority: demand before read-ahead before
/// background prefetch. A queued run that a reader starts waiting on is promoted.
/// </summary>
internal sealed class FetchSlots(int slots, Action<ChunkRun> start)
{
    private readonly Queue<ChunkRun>[] _queues = [new(), new(), new()]; // guarded by _lock
    private readonly Lock _lock = new();
    private int _free = slots;                                          // guarded by _lock

    public void Enqueue(ChunkRun run)
    {
        lock (_lock)
        {
            if (_free > 0 && run.TryMarkStarted())
            {
                _free--;
            }
            else
            {
                _queues[(int)run.Priority].Enqueue(run);
                return;
            }
        }
        start(run);
    }

    /// <summary>Moves a queued run up; the stale entry in its old queue is skipped when reached.</summary>
    public void Promote(ChunkRun run, FetchPriority priority)
    {
        lock (_lock)
        {
            if (run.Started || priority >= run.Priority) return;
            run.Priority = priority;
            _queues[(int)priority].Enqueue(run);
        }
    }

    /// <summary>A run finished: give its slot to the most urgent queued run.</summary>
    public void Finished()
    {
        ChunkRun? next = null;
        lock (_lock)
        {
            foreach (var queue in _queues)
            {
                while (queue.TryDequeue(out var candidate))
                {
                    if (candidate.TryMarkStarted()) { next = candidate; break; }
                }
                if (next is not null) break;
            }
            if (next is null) _free++;
        }
        if (next is not null) start(next);
    }
}
