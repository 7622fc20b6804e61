using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Runs of files without chunk hashes (the seed format): a shared verified copy is adopted after it was
/// hashed whole; otherwise the run's missing chunks land in the blob's private temporary file and are
/// served as they land (unverified, counted, as the seed does), and the run that lands the last one
/// verifies the whole file before anything of it reaches the shared cache.
/// </summary>
internal sealed class WholeFileFetch(BlobCache cache, RangeReader range, CounterSet counters, ILogger logger)
{
    public async Task FetchAsync(ChunkRun run, WholeBlob blob)
    {
        var d = blob.Descriptor;
        if (blob.AllRecorded)
        {
            if (await blob.TryAdoptWhole(cache.PrivateDirectory).ConfigureAwait(false)) return;
            counters.Increment(Counters.ErrorCacheDamaged);
            logger.LogWarning("{File}: the cached copy {Path} does not match its sha256; set aside and fetched again", run.FileName, blob.DataPath);
        }
        int bufferSize = range.Options.BufferSize;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(bufferSize);
        try
        {
            bool landedLast = false;
            var missing = new List<int>();
            for (int c = run.FirstChunk; c <= run.LastChunk; c++)
                if (!blob.IsServable(c)) missing.Add(c);
            foreach (var (first, last) in Sources.ChunkJob.Segments(missing))
                landedLast |= await LandAsync(run, blob, d.ChunkStart(first), d.ChunkEnd(last), buffer.AsMemory(0, bufferSize)).ConfigureAwait(false);
            if (landedLast) VerifyWholeFile(run, blob);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Streams [start, end) into the private file, releasing readers as bytes land; true when it landed the file's last chunk.</summary>
    private async Task<bool> LandAsync(ChunkRun run, WholeBlob blob, long start, long end, Memory<byte> buffer)
    {
        var d = blob.Descriptor;
        bool landedLast = false;
        long pos = start;
        for (int attempt = 1; pos < end; attempt++)
        {
            try
            {
                await using var body = await range.OpenAsync(run.Location, pos, end, attempt, run.Progress).ConfigureAwait(false);
                while (pos < end)
                {
                    int chunk = d.ChunkOf(pos);
                    int n = await body.ReadAsync(buffer[..(int)Math.Min(buffer.Length, d.ChunkEnd(chunk) - pos)]).ConfigureAwait(false);
                    blob.WriteLanded(buffer.Span[..n], pos);
                    pos += n;
                    if (pos == d.ChunkEnd(chunk))
                    {
                        counters.Increment(Counters.ChunksFetched);
                        if (blob.MarkLanded(chunk)) landedLast = true;
                    }
                    run.Advance(pos);
                }
            }
            catch (Exception e) when (range.ShouldRetry(e, attempt, out string reason))
            {
                // Private bytes: a retry goes on where the last one stopped.
                await range.BackoffAsync(attempt, run.FileName, pos, end, reason).ConfigureAwait(false);
            }
        }
        return landedLast;
    }

    private void VerifyWholeFile(ChunkRun run, WholeBlob blob)
    {
        // Its own short trace: the file's readers were answered as its bytes landed, before this check.
        using var verify = MlfsTelemetry.StartDetached("mlfs.verify", default);
        verify?.SetTag("mlfs.file", run.FileName);
        verify?.SetTag("mlfs.bytes", blob.Descriptor.Size);
        if (run.Trace is { } fetched) verify?.AddLink(new ActivityLink(fetched.Context));
        try
        {
            bool ok = blob.CompleteWhole();
            verify?.SetTag("mlfs.verified", ok);
            if (!ok)
            {
                verify?.SetStatus(ActivityStatusCode.Error, "whole-file SHA-256 mismatch");
                counters.Increment(Counters.ErrorVerification);
                logger.LogError("{File}: {Reason}; further reads get EIO", run.FileName, blob.Poison!.Message);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            blob.PoisonWith(new IOException($"{run.FileName}: whole-file verification could not run: {e.Message}", e));
            logger.LogError("{File}: whole-file verification could not run: {Error}; further reads get EIO", run.FileName, e.Message);
        }
    }
}
