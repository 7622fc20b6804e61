using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Where a stream of ranged-GET bytes goes: the range source asks for the memory to read the bytes at
/// a position into, says how many arrived, and after a failure asks where to resume.
/// </summary>
internal interface IRangeConsumer
{
    /// <summary>Memory to read the bytes at <paramref name="position"/> into (never crossing a chunk end).</summary>
    Memory<byte> BufferAt(long position);

    /// <summary><paramref name="count"/> bytes at <paramref name="position"/> arrived in the buffer; throw <see cref="ChunkVerificationException"/> to retry.</summary>
    ValueTask ArrivedAsync(long position, int count);

    /// <summary>After a failed attempt: the first byte still needed (the start of an unverified chunk).</summary>
    long ResumeAt(long failedAt);
}

/// <summary>How one fetch went: attempts, bytes, where it stopped.</summary>
internal sealed class FetchProgress
{
    public int Attempts;
    public long Position;
    public long Bytes;
}

/// <summary>
/// Ranged GETs from storage with retries: streams a range into a consumer, resuming after transient
/// failures (5xx, SlowDown, resets, stalls, truncated bodies, bytes that fail their hash) with jittered
/// exponential backoff; 403, 404 and refused requests fail at once. Reads exact ranges into memory for
/// demand parts and uncached reads. It counts requests and bytes; it knows nothing of the cache.
/// </summary>
internal sealed class RangeSource(IObjectStore store, FetcherOptions options, FetchStatistics stats, ILogger logger, CancellationToken shutdown)
{
    public FetcherOptions Options => options;

    private static readonly KeyValuePair<string, object?> Origin = new("mlfs.source", "origin");

    /// <summary>Streams [start, end) of <paramref name="location"/> into <paramref name="consumer"/>, with retries.</summary>
    public async Task StreamAsync(ObjectLocation location, string fileName, long start, long end, IRangeConsumer consumer, FetchProgress progress)
    {
        long pos = start;
        int attempt = 0;
        while (pos < end)
        {
            attempt++;
            progress.Attempts++;
            long attemptStart = pos;
            var started = Stopwatch.GetTimestamp();
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(shutdown);
            using var get = StartGet(location, pos, end, attempt);
            try
            {
                stall.CancelAfter(options.StallTimeout);
                Interlocked.Increment(ref stats.Requests);
                await using var body = await OpenAsync(get, location, pos, end - pos, stall.Token).ConfigureAwait(false);
                while (pos < end)
                {
                    var buffer = consumer.BufferAt(pos);
                    stall.CancelAfter(options.StallTimeout);
                    int n = await body.ReadAsync(buffer, stall.Token).ConfigureAwait(false);
                    if (n == 0)
                        throw new ObjectStoreException(ObjectStoreErrorKind.Transient,
                            $"GET {location.Display} bytes {attemptStart}-{end - 1}: body ended after {pos - attemptStart} of {end - attemptStart} bytes");
                    Interlocked.Add(ref stats.BytesFetched, n);
                    MlfsTelemetry.BytesFetched.Add(n, Origin);
                    progress.Bytes += n;
                    long at = pos;
                    pos += n;
                    progress.Position = pos;
                    // The GET's span ends with its last byte, before that byte's chunk is verified and its readers go on.
                    if (pos == end) EndGet(get, pos - attemptStart, null);
                    await consumer.ArrivedAsync(at, n).ConfigureAwait(false);
                }
                MlfsTelemetry.FetchDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
            catch (Exception e) when (EndGet(get, pos - attemptStart, e) && IsRetryable(e, stall, out string reason) && attempt < options.MaxAttempts)
            {
                pos = consumer.ResumeAt(pos);
                progress.Position = pos;
                Interlocked.Increment(ref stats.Retries);
                TimeSpan delay = Backoff(attempt);
                logger.LogWarning("fetch {File} bytes {Start}-{End} attempt {Attempt} failed: {Reason}; retrying in {Delay} ms",
                    fileName, pos, end - 1, attempt, reason, (int)delay.TotalMilliseconds);
                await Task.Delay(delay, shutdown).ConfigureAwait(false);
            }
        }
    }

    /// <summary>One GET of exactly destination.Length bytes at offset, into memory; a short body is a transient error.</summary>
    public async Task ReadExactAsync(ObjectLocation location, long offset, Memory<byte> destination, CancellationToken cancel, int attempt = 1)
    {
        Interlocked.Increment(ref stats.Requests);
        using var get = StartGet(location, offset, offset + destination.Length, attempt);
        int got = 0;
        try
        {
            await using var body = await OpenAsync(get, location, offset, destination.Length, cancel).ConfigureAwait(false);
            while (got < destination.Length)
            {
                int n = await body.ReadAsync(destination[got..], cancel).ConfigureAwait(false);
                if (n == 0) throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {location.Display}: body ended early");
                got += n;
            }
        }
        catch (Exception e) when (EndGet(get, got, e)) { throw; }
        EndGet(get, got, null);
        Interlocked.Add(ref stats.BytesFetched, destination.Length);
        MlfsTelemetry.BytesFetched.Add(destination.Length, Origin);
    }

    /// <summary>A span per ranged GET (one attempt), under the current one (the run or read it serves).</summary>
    private static Activity? StartGet(ObjectLocation location, long start, long end, int attempt)
    {
        var get = MlfsTelemetry.StartDetached("mlfs.get", Activity.Current?.Context ?? default);
        if (get is null) return null;
        get.SetTag("mlfs.source", "origin");
        get.SetTag("server.address", location.RequestUri.Host);
        get.SetTag("server.port", location.RequestUri.Port);
        get.SetTag("mlfs.object", location.Display);
        get.SetTag("mlfs.range.start", start);
        get.SetTag("mlfs.range.end", end);
        get.SetTag("mlfs.attempt", attempt);
        return get;
    }

    /// <summary>Opens the body with the GET's span current, so the store can put the HTTP status on it.</summary>
    private Task<Stream> OpenAsync(Activity? get, ObjectLocation location, long offset, long length, CancellationToken cancel)
    {
        if (get is null) return store.OpenRangeAsync(location, offset, length, cancel);
        var previous = Activity.Current;
        Activity.Current = get;
        try { return store.OpenRangeAsync(location, offset, length, cancel); }
        finally { Activity.Current = previous; }
    }

    /// <summary>Ends a GET's span with its bytes and outcome; true, so it can sit in an exception filter.</summary>
    private static bool EndGet(Activity? get, long bytes, Exception? error)
    {
        if (get is null || get.IsStopped) return true;
        get.SetTag("mlfs.bytes", bytes);
        if (error is not null) get.SetStatus(ActivityStatusCode.Error, Describe(error));
        get.Stop();
        return true;
    }

    /// <summary>
    /// Reads [offset, offset+destination.Length) as <paramref name="parts"/> parallel GETs; one stall
    /// timer covers them all, and a failed part stops the others. Returns once every part is in.
    /// </summary>
    public async Task ReadInPartsAsync(ObjectLocation location, long offset, Memory<byte> destination, int parts)
    {
        int length = destination.Length, partSize = (length + parts - 1) / parts;
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(shutdown);
        stall.CancelAfter(options.StallTimeout);
        var reads = new List<Task>(parts);
        for (int from = 0; from < length; from += partSize)
            reads.Add(ReadExactAsync(location, offset + from, destination.Slice(from, Math.Min(partSize, length - from)), stall.Token));
        try { await Task.WhenAll(reads).ConfigureAwait(false); }
        catch
        {
            await stall.CancelAsync().ConfigureAwait(false);
            try { await Task.WhenAll(reads).ConfigureAwait(false); } catch (Exception) { } // let every part stop before the buffer is reused
            throw;
        }
    }

    /// <summary>
    /// A read that cannot be cached: GETs [offset, offset+destination.Length) into memory with retries,
    /// handing each attempt's bytes to <paramref name="check"/> (which throws to retry).
    /// </summary>
    public async Task ReadWithRetriesAsync(ObjectLocation location, long offset, Memory<byte> destination, Action check, CancellationToken cancel)
    {
        for (int attempt = 1; ; attempt++)
        {
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancel, shutdown);
            try
            {
                stall.CancelAfter(options.StallTimeout);
                await ReadExactAsync(location, offset, destination, stall.Token, attempt).ConfigureAwait(false);
                check();
                return;
            }
            catch (Exception e) when (!cancel.IsCancellationRequested && attempt < options.MaxAttempts && IsRetryable(e, stall, out _))
            {
                Interlocked.Increment(ref stats.Retries);
                await Task.Delay(Backoff(attempt), cancel).ConfigureAwait(false);
            }
        }
    }

    private bool IsRetryable(Exception e, CancellationTokenSource stall, out string reason)
    {
        reason = Describe(e);
        if (shutdown.IsCancellationRequested || e is CacheFullException) return false;
        switch (e)
        {
            case ObjectStoreException s: return s.IsTransient;
            case ChunkVerificationException: return true;
            case OperationCanceledException when stall.IsCancellationRequested:
                reason = $"no data for {options.StallTimeout.TotalSeconds:0.#} s (stalled)";
                return true;
            case IOException or HttpRequestException: return true;
            default: return false;
        }
    }

    public static string Describe(Exception e) => e switch
    {
        ObjectStoreException or ChunkVerificationException or CacheFullException => e.Message,
        IOException io => $"connection error ({io.Message})",
        HttpRequestException http => $"connection error ({http.HttpRequestError})",
        OperationCanceledException => "cancelled",
        _ => e.GetType().Name + ": " + e.Message,
    };

    public static string ErrorKind(Exception e) => e switch
    {
        ObjectStoreException { Kind: ObjectStoreErrorKind.NotFound } => "not_found",
        ObjectStoreException { Kind: ObjectStoreErrorKind.AccessDenied } => "access_denied",
        ObjectStoreException { Kind: ObjectStoreErrorKind.BadResponse } => "bad_response",
        ObjectStoreException { Kind: ObjectStoreErrorKind.Rejected } => "rejected",
        ObjectStoreException => "transient",
        ChunkVerificationException => "verification",
        CacheFullException => "cache_full",
        _ => "io",
    };

    private TimeSpan Backoff(int attempt)
    {
        double cap = Math.Min(options.RetryMaxDelay.TotalMilliseconds, options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, attempt - 1));
        return TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * cap);
    }
}
