using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching.Sources;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// The scheduler of the fetch path: makes byte ranges of blobs servable. It finds the chunks not
/// servable yet, registers one run per stretch of them (single flight: every reader and prefetcher of a
/// chunk in this process shares its run), hands runs out by priority within the connection budget
/// (<see cref="FetchSlots"/>), and releases each waiting reader as soon as its own chunks are verified.
/// Where a run's chunks come from is the chain of sources' business (<see cref="SourceChain"/>), what
/// happens to each verified chunk the sink's; a file without chunk hashes runs through
/// <see cref="WholeFileFetch"/>.
/// <para>
/// A run holds a reference on its blob until it ends, so neither the idle pool nor eviction can close
/// the files under it. A failure reaches the reader as a <see cref="FetchException"/> whose kind says
/// whether it can read uncached, never as wrong bytes.
/// </para>
/// </summary>
public sealed class ChunkFetcher : IDisposable
{
    private readonly BlobCache _cache;
    private readonly SourceChain _chain;
    private readonly WholeFileFetch _whole;
    private readonly ChunkMemory _memory;
    private readonly CounterSet _counters;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _shutdown;
    private readonly FetchSlots _slots;
    private readonly SingleFlight _flights = new();
    private int _activeRuns;
    private int _cacheFull;

    /// <summary>Composed by the mount (see Mounting/FetchPath): <paramref name="shutdown"/> is the token its sources stop on.</summary>
    internal ChunkFetcher(BlobCache cache, SourceChain chain, WholeFileFetch whole, ChunkMemory memory, FetcherOptions options,
        CounterSet counters, ILogger logger, CancellationTokenSource shutdown)
    {
        (_cache, _chain, _whole, _memory, Options) = (cache, chain, whole, memory, options);
        (_counters, _logger, _shutdown) = (counters, logger, shutdown);
        _slots = new FetchSlots(options.MaxConcurrentFetches, run => _ = Task.Run(() => ExecuteAsync(run)));
    }

    public FetcherOptions Options { get; }

    /// <summary>Set once the cache's disk filled up; reads then go straight to storage, uncached, until there is room.</summary>
    public bool CacheFull => Volatile.Read(ref _cacheFull) != 0;

    /// <summary>Completes when [offset, offset+length) of the blob can be read from the cache.</summary>
    public ValueTask EnsureAsync(CachedBlob blob, ObjectLocation location, string fileName, long offset, long length,
        FetchPriority priority, CancellationToken cancel)
    {
        if (blob.Poison is { } poison) return ValueTask.FromException(poison);
        length = Math.Min(length, blob.Descriptor.Size - offset);
        if (length <= 0 || blob.IsRangeServable(offset, length)) return ValueTask.CompletedTask;
        return WaitAsync(this, blob, location, fileName, offset, length, priority, cancel);

        static async ValueTask WaitAsync(ChunkFetcher self, CachedBlob blob, ObjectLocation location, string fileName,
            long offset, long length, FetchPriority priority, CancellationToken cancel)
        {
            long end = offset + length;
            foreach (var run in self.Schedule(blob, location, fileName, offset, end, priority))
                await run.WaitAsync(Math.Min(end, run.End)).WaitAsync(cancel).ConfigureAwait(false);
            if (blob.Poison is { } poison) throw poison;
            // The one boundary every reader passes: whatever the runs did, only verified chunks are read.
            // (Whole files are served as they land, from this process's private file: seed-format semantics.)
            if (blob.Descriptor.HasChunkHashes && !blob.IsRangeServable(offset, length))
                throw new FetchException(FetchFailure.NotStored, $"{fileName}: bytes {offset}-{end - 1} verified but not all could be stored");
        }
    }

    /// <summary>Starts fetching [offset, offset+length) in the background (read-ahead, prefetch) without waiting.</summary>
    public void Prefetch(CachedBlob blob, ObjectLocation location, string fileName, long offset, long length, FetchPriority priority)
    {
        length = Math.Min(length, blob.Descriptor.Size - offset);
        if (length <= 0 || blob.Poison is not null || blob.IsRangeServable(offset, length)) return;
        Schedule(blob, location, fileName, offset, offset + length, priority);
    }

    /// <summary>Registers runs for the chunks of [offset, end) not servable yet and returns every run the range depends on.</summary>
    private List<ChunkRun> Schedule(CachedBlob blob, ObjectLocation location, string fileName, long offset, long end, FetchPriority priority)
    {
        var d = blob.Descriptor;
        var (first, last) = d.ChunksOf(offset, end - offset);
        int maxChunksPerRun = (int)Math.Max(1, Options.MaxRequestBytes / d.ChunkSize);
        var runs = new List<ChunkRun>();
        var toStart = new List<ChunkRun>();
        var flights = _flights.For(blob);
        lock (flights.Sync)
        {
            for (int c = first; c <= last; c++)
            {
                if (blob.IsServable(c)) continue;
                if (flights.Runs[c] is { } existing)
                {
                    if (runs.Count == 0 || !ReferenceEquals(runs[^1], existing))
                    {
                        runs.Add(existing);
                        // A read served by a run it did not start points at that run's trace.
                        if (priority == FetchPriority.Demand && existing.Trace is { } joined) Activity.Current?.AddLink(new ActivityLink(joined.Context));
                    }
                    if (priority < existing.Priority) _slots.Promote(existing, priority);
                    continue;
                }
                int stop = c;
                while (stop + 1 <= last && stop + 1 - c < maxChunksPerRun && !blob.IsServable(stop + 1) && flights.Runs[stop + 1] is null)
                    stop++;
                var run = new ChunkRun(blob, location, fileName, c, stop, priority);
                // A waiting read's run is part of that read's trace; read-ahead and background runs are traces of their own.
                run.BeginTrace(priority == FetchPriority.Demand ? Activity.Current?.Context ?? default : default);
                _cache.Retain(blob); // released when the run ends: its files stay open until then
                for (int k = c; k <= stop; k++) flights.Runs[k] = run;
                runs.Add(run);
                toStart.Add(run);
                c = stop;
            }
        }
        foreach (var run in toStart) _slots.Enqueue(run);
        return runs;
    }

    /// <summary>One run, from its slot to its end: room in the cache, a buffer, its chunks from the chain (or a whole-file fetch).</summary>
    private async Task ExecuteAsync(ChunkRun run)
    {
        Interlocked.Increment(ref _activeRuns);
        Activity.Current = run.Trace; // the run's GETs are children of its own span, whichever read's context started this task
        MlfsTelemetry.FetchesInFlight.Add(1);
        bool reserved = false;
        try
        {
            await _cache.EnsureRoomAsync(run.End - run.Start).ConfigureAwait(false);
            reserved = true;
            if (run.Blob is ChunkedBlob chunked) await FetchChunkedAsync(run, chunked).ConfigureAwait(false);
            else await _whole.FetchAsync(run, (WholeBlob)run.Blob).ConfigureAwait(false);
            run.Advance(run.End);
        }
        catch (Exception e)
        {
            Fail(run, e);
        }
        finally
        {
            run.EndTrace();
            MlfsTelemetry.FetchesInFlight.Add(-1);
            if (reserved) _cache.ReleaseReservation(run.End - run.Start);
            _flights.Finished(run);
            _cache.Release(run.Blob);
            _slots.Finished();
            Interlocked.Decrement(ref _activeRuns);
        }
    }

    private async Task FetchChunkedAsync(ChunkRun run, ChunkedBlob blob)
    {
        var missing = new List<int>();
        for (int c = run.FirstChunk; c <= run.LastChunk; c++)
            if (!blob.IsServable(c)) missing.Add(c);
        var job = new ChunkJob(run, blob, _memory, missing, _shutdown.Token);
        try { await _chain.FetchAsync(job).ConfigureAwait(false); }
        finally { job.End(); }
    }

    private void Fail(ChunkRun run, Exception e)
    {
        bool stopping = _shutdown.IsCancellationRequested;
        var failure = FetchErrors.Classify(e, stopping);
        string reason = stopping && e is OperationCanceledException ? "the mount is stopping" : FetchErrors.Describe(e);
        _counters.Increment(Counters.FetchFailures);
        _counters.Increment(FetchErrors.CounterOf(e));
        if (failure == FetchFailure.CacheFull) NoteCacheFull(run.FileName);
        else if (!stopping)
            _logger.LogError("fetch {File} bytes {Start}-{End} failed after {Attempts} attempt(s): {Reason}; reads of these bytes get EIO",
                run.FileName, run.Progress.Position, run.End - 1, run.Progress.Attempts, reason);
        run.Fail(new FetchException(failure, $"{run.FileName}: {reason}", e));
    }

    private void NoteCacheFull(string fileName)
    {
        if (Interlocked.Exchange(ref _cacheFull, 1) != 0) return;
        _logger.LogWarning("the cache disk is full ({Root}, writing {File}): serving reads straight from storage, uncached, until there is room; free space or lower --cache-size",
            _cache.Root, fileName);
    }

    /// <summary>
    /// Stops fetching: runs still on the network fail at their next read, and every run ends only after
    /// the write of a chunk it already verified has landed (a clean unmount keeps what it fetched).
    /// Returns once no run is left, or after <paramref name="bound"/>.
    /// </summary>
    public async Task StopAsync(TimeSpan bound)
    {
        await _shutdown.CancelAsync().ConfigureAwait(false);
        var deadline = Environment.TickCount64 + (long)bound.TotalMilliseconds;
        while (Volatile.Read(ref _activeRuns) > 0 && Environment.TickCount64 < deadline)
            await Task.Delay(10, CancellationToken.None).ConfigureAwait(false);
    }

    public void Dispose()
    {
        _shutdown.Cancel();
        _shutdown.Dispose();
    }
}
