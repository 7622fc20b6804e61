using System.Diagnostics;
using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

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
    private int _traceEnded;

    public CachedBlob Blob { get; } = blob;
    public ObjectLocation Location { get; } = location;
    public string FileName { get; } = fileName;
    public int FirstChunk { get; } = firstChunk;
    public int LastChunk { get; } = lastChunk;
    public long Start => Blob.Descriptor.ChunkStart(FirstChunk);
    public long End => Blob.Descriptor.ChunkEnd(LastChunk);

    /// <summary>Only raised (towards Demand) while queued; see <see cref="FetchSlots.Promote"/>.</summary>
    public FetchPriority Priority { get; set; } = priority;

    /// <summary>Attempts and bytes of this run's GETs.</summary>
    public FetchProgress Progress { get; } = new() { Position = blob.Descriptor.ChunkStart(firstChunk) };

    /// <summary>
    /// This run's span (mlfs.fetch), from the moment it was asked for: under the read that asked for it,
    /// or a trace of its own (read-ahead, background). It ends once every chunk of the run is servable,
    /// or the run failed, before any waiting reader is released, so it never outlives a read it serves.
    /// The cache write that follows is not part of it (it is off the reader's path).
    /// </summary>
    public Activity? Trace { get; private set; }

    public void BeginTrace(ActivityContext parent)
    {
        Trace = MlfsTelemetry.StartDetached("mlfs.fetch", parent);
        if (Trace is null) return;
        Trace.SetTag("mlfs.file", FileName);
        Trace.SetTag("mlfs.offset", Start);
        Trace.SetTag("mlfs.length", End - Start);
        Trace.SetTag("mlfs.chunk.first", FirstChunk);
        Trace.SetTag("mlfs.chunk.last", LastChunk);
        Trace.SetTag("mlfs.reason", Priority switch
        {
            FetchPriority.Demand => "read",
            FetchPriority.ReadAhead => "read_ahead",
            _ => "background",
        });
    }

    /// <summary>A child span of this run's (a verification), or none once the run's span ended.</summary>
    public Activity? StartChild(string name) =>
        Trace is { } trace && Volatile.Read(ref _traceEnded) == 0 ? MlfsTelemetry.StartDetached(name, trace.Context) : null;

    /// <summary>Ends the span (once): with the run's error, or with what its GETs did.</summary>
    public void EndTrace(Exception? error = null)
    {
        if (Trace is not { } trace || Interlocked.Exchange(ref _traceEnded, 1) != 0) return;
        trace.SetTag("mlfs.attempts", Progress.Attempts);
        trace.SetTag("mlfs.bytes", Progress.Bytes);
        if (error is not null) trace.SetStatus(ActivityStatusCode.Error, FetchErrors.Describe(error));
        trace.Stop();
    }

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
        if (servableEnd >= End) EndTrace(); // before the readers go on
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
        EndTrace(error);
        foreach (var (_, done) in waiting) done.TrySetException(error);
    }
}
