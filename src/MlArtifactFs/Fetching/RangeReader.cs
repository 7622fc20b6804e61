using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>Attempts and bytes of one run's GETs, and where it stands (for its span and its error message).</summary>
internal sealed class FetchProgress
{
    public int Attempts;
    public long Position;
    public long Bytes;
}

/// <summary>
/// Ranged GETs from storage, pulled by their callers: <see cref="OpenAsync"/> gives a body to read bytes
/// from (a span per GET, requests and bytes counted, a stall bound per read), and <see cref="ShouldRetry"/>
/// and <see cref="BackoffAsync"/> are the one retry policy (jittered exponential backoff over 5xx,
/// SlowDown, resets, stalls, truncated bodies and bytes that fail their hash; 403, 404 and refused
/// requests fail at once). It knows nothing of chunks or the cache.
/// </summary>
internal sealed class RangeReader(IObjectStore store, FetcherOptions options, CounterSet counters, ILogger logger, CancellationToken shutdown)
{
    public FetcherOptions Options => options;

    /// <summary>The link as the GETs so far saw it (for the parts of chunks readers wait on).</summary>
    public LinkEstimate Link { get; } = new();

    /// <summary>Parallel parts for a cold chunk a reader waits on: the option, or (0) what the link calls for.</summary>
    public int DemandParts(int length, int minPart) =>
        options.DemandChunkParts > 0 ? (int)Math.Min(options.DemandChunkParts, length / minPart) : Link.PartsFor(length, minPart);

    /// <summary>The mount is stopping: nothing is retried.</summary>
    public bool Stopping => shutdown.IsCancellationRequested;

    /// <summary>Opens a GET of [start, end) (attempt <paramref name="attempt"/>), under the current span.</summary>
    public async Task<RangeBody> OpenAsync(ObjectLocation location, long start, long end, int attempt, FetchProgress? progress = null)
    {
        counters.Increment(Counters.Requests);
        if (progress is not null) progress.Attempts++;
        var get = StartGet(location, start, end, attempt);
        var stall = CancellationTokenSource.CreateLinkedTokenSource(shutdown);
        try
        {
            stall.CancelAfter(options.StallTimeout);
            long sent = Stopwatch.GetTimestamp();
            var stream = await OpenWithSpanAsync(get, location, start, end - start, stall.Token).ConfigureAwait(false);
            return new RangeBody(this, stream, stall, get, location, start, end, progress, sent);
        }
        catch (Exception e)
        {
            var stalled = Stalled(e, stall);
            EndGet(get, 0, stalled ?? e);
            stall.Dispose();
            if (stalled is null) throw;
            throw stalled;
        }
    }

    /// <summary>One GET of exactly destination.Length bytes at offset, into memory; a short body is a transient error.</summary>
    public async Task ReadExactAsync(ObjectLocation location, long offset, Memory<byte> destination, CancellationToken cancel, int attempt = 1)
    {
        counters.Increment(Counters.Requests);
        using var get = StartGet(location, offset, offset + destination.Length, attempt);
        int got = 0, firstRead = 0;
        long sent = Stopwatch.GetTimestamp(), firstByte = 0;
        try
        {
            await using var body = await OpenWithSpanAsync(get, location, offset, destination.Length, cancel).ConfigureAwait(false);
            while (got < destination.Length)
            {
                int n = await body.ReadAsync(destination[got..], cancel).ConfigureAwait(false);
                if (n == 0) throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {location.Display}: body ended early");
                if (got == 0) (firstByte, firstRead) = (Stopwatch.GetTimestamp(), n);
                got += n;
            }
        }
        catch (Exception e) when (EndGet(get, got, e)) { throw; }
        EndGet(get, got, null);
        Link.Record(sent, firstByte, Stopwatch.GetTimestamp(), got, firstRead);
        counters.Add(Counters.BytesFetched, destination.Length);
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
            catch (Exception e) when (!cancel.IsCancellationRequested && ShouldRetry(Stalled(e, stall) ?? e, attempt, out _))
            {
                counters.Increment(Counters.Retries);
                await Task.Delay(Backoff(attempt), cancel).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Whether a failed attempt is worth another (and why it failed, for the log).</summary>
    public bool ShouldRetry(Exception e, int attempt, out string reason)
    {
        reason = FetchErrors.Describe(e);
        if (shutdown.IsCancellationRequested || attempt >= options.MaxAttempts) return false;
        return e switch
        {
            ObjectStoreException s => s.IsTransient,
            ChunkVerificationException => true,
            CacheFullException or ChunkStoreException or OperationCanceledException => false,
            IOException or HttpRequestException => true,
            _ => false,
        };
    }

    /// <summary>Counts and logs a retry, then waits out its backoff.</summary>
    public Task BackoffAsync(int attempt, string fileName, long from, long to, string reason)
    {
        counters.Increment(Counters.Retries);
        TimeSpan delay = Backoff(attempt);
        logger.LogWarning("fetch {File} bytes {Start}-{End} attempt {Attempt} failed: {Reason}; retrying in {Delay} ms",
            fileName, from, to - 1, attempt, reason, (int)delay.TotalMilliseconds);
        return Task.Delay(delay, shutdown);
    }

    private TimeSpan Backoff(int attempt)
    {
        double cap = Math.Min(options.RetryMaxDelay.TotalMilliseconds, options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, attempt - 1));
        return TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * cap);
    }

    /// <summary>A cancellation caused by the stall timer, as the transient error it is (null: not a stall).</summary>
    internal ObjectStoreException? Stalled(Exception e, CancellationTokenSource stall) =>
        e is OperationCanceledException && stall.IsCancellationRequested && !shutdown.IsCancellationRequested
            ? new ObjectStoreException(ObjectStoreErrorKind.Transient, $"no data for {options.StallTimeout.TotalSeconds:0.#} s (stalled)")
            : null;

    internal void CountBytes(int n) => counters.Add(Counters.BytesFetched, n);

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
    private Task<Stream> OpenWithSpanAsync(Activity? get, ObjectLocation location, long offset, long length, CancellationToken cancel)
    {
        if (get is null) return store.OpenRangeAsync(location, offset, length, cancel);
        var previous = Activity.Current;
        Activity.Current = get;
        try { return store.OpenRangeAsync(location, offset, length, cancel); }
        finally { Activity.Current = previous; }
    }

    /// <summary>Ends a GET's span with its bytes and outcome; true, so it can sit in an exception filter.</summary>
    internal static bool EndGet(Activity? get, long bytes, Exception? error)
    {
        if (get is null || get.IsStopped) return true;
        get.SetTag("mlfs.bytes", bytes);
        if (error is not null) get.SetStatus(ActivityStatusCode.Error, FetchErrors.Describe(error));
        get.Stop();
        return true;
    }
}

/// <summary>
/// The body of one ranged GET, read by its caller: each read is bounded by the stall timeout, counted,
/// and checked (a body that ends early is a transient error). The GET's span ends with its last byte,
/// before that byte's chunk is verified and its readers go on.
/// </summary>
internal sealed class RangeBody : IAsyncDisposable
{
    private readonly RangeReader _reader;
    private readonly Stream _stream;
    private readonly CancellationTokenSource _stall;
    private readonly Activity? _get;
    private readonly ObjectLocation _location;
    private readonly long _start, _end;
    private readonly FetchProgress? _progress;
    private readonly long _opened;
    private long _firstByte, _firstRead;
    private long _position;

    internal RangeBody(RangeReader reader, Stream stream, CancellationTokenSource stall, Activity? get, ObjectLocation location, long start, long end,
        FetchProgress? progress, long sent)
    {
        _opened = sent;
        _reader = reader;
        _stream = stream;
        _stall = stall;
        _get = get;
        _location = location;
        _start = _position = start;
        _end = end;
        _progress = progress;
    }

    /// <summary>Reads the next bytes (at <see cref="Position"/>) into <paramref name="buffer"/>; at least one byte, or throws.</summary>
    public async ValueTask<int> ReadAsync(Memory<byte> buffer)
    {
        int n;
        try
        {
            _stall.CancelAfter(_reader.Options.StallTimeout);
            n = await _stream.ReadAsync(buffer[..(int)Math.Min(buffer.Length, _end - _position)], _stall.Token).ConfigureAwait(false);
            if (n == 0)
                throw new ObjectStoreException(ObjectStoreErrorKind.Transient,
                    $"GET {_location.Display} bytes {_start}-{_end - 1}: body ended after {_position - _start} of {_end - _start} bytes");
        }
        catch (Exception e)
        {
            var error = _reader.Stalled(e, _stall) ?? e;
            RangeReader.EndGet(_get, _position - _start, error);
            if (ReferenceEquals(error, e)) throw;
            throw error;
        }
        _reader.CountBytes(n);
        if (_position == _start) (_firstByte, _firstRead) = (Stopwatch.GetTimestamp(), n);
        _position += n;
        if (_progress is not null)
        {
            _progress.Bytes += n;
            _progress.Position = _position;
        }
        if (_position == _end)
        {
            RangeReader.EndGet(_get, _position - _start, null);
            MlfsTelemetry.FetchDuration.Record(Stopwatch.GetElapsedTime(_opened).TotalSeconds);
            _reader.Link.Record(_opened, _firstByte, Stopwatch.GetTimestamp(), _end - _start, _firstRead);
        }
        return n;
    }

    public long Position => _position;

    public async ValueTask DisposeAsync()
    {
        RangeReader.EndGet(_get, _position - _start, null);
        await _stream.DisposeAsync().ConfigureAwait(false);
        _stall.Dispose();
    }
}
