using MlArtifactFs.Cache;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Fetching;

public enum FetchPriority
{
    /// <summary>A reader is waiting for these bytes.</summary>
    Demand = 0,
    /// <summary>Sequential read-ahead: soon needed.</summary>
    ReadAhead = 1,
    /// <summary>--prefetch-all: fills idle bandwidth only.</summary>
    Background = 2,
}

/// <summary>
/// One fetch request: a ranged GET covering contiguous chunks [FirstChunk, LastChunk] of a blob,
/// registered in the blob's in-flight table so every reader of those chunks shares it. Readers wait
/// for a byte position (<see cref="WaitAsync"/>) rather than for the whole run, so a read is answered
/// as soon as the chunks it touches have arrived (and verified, when chunk hashes exist).
/// </summary>
internal sealed class ChunkRun(CachedBlob blob, ObjectLocation location, string fileName, int firstChunk, int lastChunk, FetchPriority priority)
{
    private readonly Lock _lock = new();
    private readonly List<(long UpTo, TaskCompletionSource Done)> _waiters = []; // guarded by _lock
    private long _servableEnd = blob.Descriptor.ChunkStart(firstChunk);           // guarded by _lock
    private Exception? _failure;                                                  // guarded by _lock
    private int _started;
    private readonly bool[] _ready = new bool[lastChunk - firstChunk + 1];      // guarded by _lock

    public CachedBlob Blob { get; } = blob;
    public ObjectLocation Location { get; } = location;
    public string FileName { get; } = fileName;
    public int FirstChunk { get; } = firstChunk;
    public int LastChunk { get; } = lastChunk;
    public long Start => Blob.Descriptor.ChunkStart(FirstChunk);
    public long End => Blob.Descriptor.ChunkEnd(LastChunk);

    /// <summary>Only raised (towards Demand) while queued; see <see cref="FetchScheduler.Promote"/>.</summary>
    public FetchPriority Priority { get; set; } = priority;

    public bool TryMarkStarted() => Interlocked.Exchange(ref _started, 1) == 0;
    public bool Started => Volatile.Read(ref _started) != 0;

    /// <summary>Completes once bytes [Start, upTo) can be served, or faults with the run's error.</summary>
    public Task WaitAsync(long upTo)
    {
        lock (_lock)
        {
            if (_servableEnd >= upTo) return Task.CompletedTask;
            if (_failure is not null) return Task.FromException(_failure);
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((upTo, done));
            return done.Task;
        }
    }

    /// <summary>Bytes before <paramref name="servableEnd"/> may now be served.</summary>
    public void Advance(long servableEnd)
    {
        List<TaskCompletionSource>? ready = null;
        lock (_lock)
        {
            if (servableEnd <= _servableEnd) return;
            _servableEnd = servableEnd;
            for (int i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].UpTo > servableEnd) continue;
                (ready ??= []).Add(_waiters[i].Done);
                _waiters.RemoveAt(i);
            }
        }
        if (ready is not null) foreach (var done in ready) done.TrySetResult();
    }

    /// <summary>
    /// A chunk of the run is verified (fetched, or copied from a duplicate). Chunks may complete out
    /// of order (dedup); readers are released up to the end of the verified prefix.
    /// </summary>
    public void ChunkReady(int chunk)
    {
        long end;
        lock (_lock)
        {
            _ready[chunk - FirstChunk] = true;
            int c = FirstChunk;
            while (c <= LastChunk && _ready[c - FirstChunk]) c++;
            end = c > LastChunk ? End : Blob.Descriptor.ChunkStart(c);
        }
        Advance(end);
    }

    public void Fail(Exception error)
    {
        List<(long, TaskCompletionSource)> waiting;
        lock (_lock)
        {
            _failure ??= error;
            waiting = [.. _waiters];
            _waiters.Clear();
        }
        foreach (var (_, done) in waiting) done.TrySetException(error);
    }
}
