using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching.Sources;

/// <summary>
/// The last tier: ranged GETs from object storage. Contiguous missing chunks stream in one GET; each
/// chunk is received straight into a buffer of its own (from the chunk memory budget), hashed and, once
/// it verified, goes to the sink with its buffer: staged (its readers answered from that buffer) and
/// stored while the next chunk streams in (at most one write in flight). A chunk that fails its hash is
/// never staged or written; the retry resumes at its start. A cold chunk a reader waits on may come as parallel
/// parts (<see cref="FetcherOptions.DemandChunkParts"/>).
/// </summary>
internal sealed class StorageSource(RangeReader range, ChunkSink sink, CounterSet counters, ILogger logger) : IChunkSource
{
    private const long MinDemandPart = 256 << 10;

    public async Task FetchAsync(ChunkJob job)
    {
        foreach (var (first, last) in ChunkJob.Segments(job.Missing))
        {
            int from = first;
            if (job.Run.Priority == FetchPriority.Demand && await TryFetchInPartsAsync(job, first).ConfigureAwait(false)) from++;
            if (from <= last) await StreamAsync(job, from, last).ConfigureAwait(false);
        }
        job.Missing.Clear();
    }

    /// <summary>Streams chunks [first, last] in one GET (resumed at the first unverified chunk after a failure).</summary>
    private async Task StreamAsync(ChunkJob job, int first, int last)
    {
        var run = job.Run;
        var d = job.Descriptor;
        Task pendingStore = Task.CompletedTask;
        long pos = d.ChunkStart(first), end = d.ChunkEnd(last);
        long verifiedUpTo = pos; // a retry resumes here: the start of the first chunk not verified yet
        ChunkBuffer? receiving = null; // the chunk arriving now, in a buffer of its own (the next one arrives while this one is written)
        job.Blob.Preallocate(pos, end - pos);
        using var hasher = ChunkVerifier.Begin(d);
        try
        {
            for (int attempt = 1; pos < end; attempt++)
            {
                try
                {
                    await using var body = await range.OpenAsync(run.Location, pos, end, attempt, run.Progress).ConfigureAwait(false);
                    while (pos < end)
                    {
                        int chunk = d.ChunkOf(pos);
                        int inChunk = (int)(pos - d.ChunkStart(chunk)), length = d.ChunkLength(chunk);
                        receiving ??= await job.RentAsync(chunk).ConfigureAwait(false);
                        var bytes = receiving.Memory;
                        int n = await body.ReadAsync(bytes[inChunk..]).ConfigureAwait(false);
                        hasher.Append(bytes.Span.Slice(inChunk, n));
                        pos += n;
                        if (inChunk + n < length) continue;
                        var verified = sink.Verify(run, chunk, bytes, out string actual, hasher)
                                       ?? throw ChunkVerifier.Mismatch(d, chunk, length, actual, run.FileName); // retried from the chunk's start; nothing was written
                        verifiedUpTo = pos;
                        await pendingStore.ConfigureAwait(false); // at most one write in flight
                        var buffer = receiving;
                        receiving = null;
                        ChunkSink.Stage(run, verified, buffer); // readers are answered now; the buffer is the blob's from here on
                        counters.Increment(Counters.ChunksFetched);
                        pendingStore = Task.Run(() => sink.Store(run, verified));
                    }
                }
                catch (Exception e) when (range.ShouldRetry(e, attempt, out string reason))
                {
                    hasher.Reset(); // the chunk starts again from its first byte
                    pos = verifiedUpTo;
                    await range.BackoffAsync(attempt, run.FileName, pos, end, reason).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            receiving?.Dispose();
            // A failed stream's own error is the one reported; a failed write alone is reported below.
            try { await pendingStore.ConfigureAwait(false); }
            catch (Exception) { }
        }
        await pendingStore.ConfigureAwait(false); // its failure, if the stream itself succeeded
    }

    /// <summary>
    /// One chunk a reader waits on, as parallel ranged GETs into memory, verified, then stored. False
    /// (nothing stored, nothing served) when it should not or could not: the chunk then streams the
    /// ordinary way, with its retries. A full cache disk still fails the run.
    /// </summary>
    private async Task<bool> TryFetchInPartsAsync(ChunkJob job, int chunk)
    {
        var run = job.Run;
        var d = job.Descriptor;
        int length = d.ChunkLength(chunk);
        int parts = range.DemandParts(length, (int)MinDemandPart);
        if (parts < 2) return false;
        var buffer = await job.RentAsync(chunk).ConfigureAwait(false);
        var bytes = buffer.Memory;
        bool given = false; // once the sink has the chunk, the buffer is the blob's
        try
        {
            run.Progress.Attempts++;
            await range.ReadInPartsAsync(run.Location, d.ChunkStart(chunk), bytes, parts).ConfigureAwait(false);
            run.Progress.Bytes += length;
            if (sink.Verify(run, chunk, bytes, out _) is not { } verified)
            {
                counters.Increment(Counters.ErrorVerification);
                logger.LogWarning("{File}: chunk {Chunk} fetched in {Parts} parts does not match its {Algorithm}; fetching it again as one stream",
                    run.FileName, chunk, parts, d.Algorithm == ChunkHashAlgorithm.Blake3 ? "BLAKE3" : "SHA-256");
                counters.Increment(Counters.Retries);
                return false;
            }
            given = true;
            sink.Accept(run, verified, buffer);
            counters.Increment(Counters.ChunksFetched);
            run.Progress.Position = d.ChunkEnd(chunk);
            return true;
        }
        catch (Exception e) when (e is not (CacheFullException or ChunkStoreException) && !range.Stopping)
        {
            logger.LogDebug("{File}: chunk {Chunk} in parts failed ({Reason}); fetching it as one stream", run.FileName, chunk, FetchErrors.Describe(e));
            counters.Increment(Counters.Retries);
            return false;
        }
        finally
        {
            if (!given) buffer.Dispose();
        }
    }
}
