using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Index;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Makes byte ranges of blobs servable: finds the chunks missing from the cache, fetches each one
/// once however many readers (and prefetchers) want it, streams it into the cache file, verifies
/// it, records it, and releases each waiting reader as soon as its own bytes are in.
/// <para>
/// Before fetching, a run takes what the cache already has: chunks recorded earlier (checked against
/// their digest), identical chunks of other blobs (copied and re-verified, via the chunk index), and
/// chunks another process holds the fetch lease for (waited for, bounded by the lease time).
/// </para>
/// <para>
/// Retries transient failures (5xx, SlowDown, resets, stalls, truncated bodies, bytes that fail
/// their hash) with jittered exponential backoff, resuming at the first unverified chunk; 403 and 404
/// fail at once. A failure reaches the reader as an exception (EIO), never as wrong bytes. When the
/// cache's disk is full, readers fall back to <see cref="ReadUncachedAsync"/>.
/// </para>
/// </summary>
public sealed class ChunkFetcher : IDisposable
{
    private readonly IObjectStore _store;
    private readonly BlobCache _cache;
    private readonly FetcherOptions _options;
    private readonly FetchStatistics _stats;
    private readonly ILogger _logger;
    private readonly FetchScheduler _scheduler;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly IChunkIndex _index;

    public ChunkFetcher(IObjectStore store, BlobCache cache, FetcherOptions options, FetchStatistics stats, ILogger logger, IChunkIndex? index = null)
    {
        _index = index ?? new LocalChunkIndex();
        _store = store;
        _cache = cache;
        _options = options;
        _stats = stats;
        _logger = logger;
        _scheduler = new FetchScheduler(options.MaxConcurrentFetches, run => _ = Task.Run(() => ExecuteAsync(run)));
    }

    public FetcherOptions Options => _options;

    /// <summary>Completes when [offset, offset+length) of the blob can be read from the cache.</summary>
    public ValueTask EnsureAsync(CachedBlob blob, ObjectLocation location, string fileName, long offset, long length,
        FetchPriority priority, CancellationToken cancel)
    {
        if (blob.Poison is { } poison) return ValueTask.FromException(poison);
        length = Math.Min(length, blob.Descriptor.Size - offset);
        if (length <= 0 || blob.IsRangeServable(offset, length)) return ValueTask.CompletedTask;
        return SlowAsync(this, blob, location, fileName, offset, length, priority, cancel);

        static async ValueTask SlowAsync(ChunkFetcher self, CachedBlob blob, ObjectLocation location, string fileName,
            long offset, long length, FetchPriority priority, CancellationToken cancel)
        {
            blob.Refresh(); // another process may have fetched it meanwhile
            var d = blob.Descriptor;
            for (int c = d.ChunkOf(offset); c <= d.ChunkOf(offset + length - 1); c++) self.Adopt(blob, c, fileName);
            if (blob.IsRangeServable(offset, length)) return;
            long end = offset + length;
            var runs = self.Schedule(blob, location, fileName, offset, end, priority);
            foreach (var run in runs)
                await run.WaitAsync(Math.Min(end, run.End)).WaitAsync(cancel).ConfigureAwait(false);
            if (blob.Poison is { } poison) throw poison;
        }
    }

    /// <summary>Starts fetching [offset, offset+length) in the background (read-ahead, prefetch) without waiting.</summary>
    public void Prefetch(CachedBlob blob, ObjectLocation location, string fileName, long offset, long length, FetchPriority priority)
    {
        length = Math.Min(length, blob.Descriptor.Size - offset);
        if (length <= 0 || blob.Poison is not null || blob.IsRangeServable(offset, length)) return;
        Schedule(blob, location, fileName, offset, offset + length, priority);
    }

    /// <summary>Registers runs for the missing chunks of [offset, end) and returns every run the range depends on.</summary>
    private List<ChunkRun> Schedule(CachedBlob blob, ObjectLocation location, string fileName, long offset, long end, FetchPriority priority)
    {
        var d = blob.Descriptor;
        int first = d.ChunkOf(offset), last = d.ChunkOf(end - 1);
        int maxChunksPerRun = (int)Math.Max(1, _options.MaxRequestBytes / d.ChunkSize);
        var runs = new List<ChunkRun>();
        var toStart = new List<ChunkRun>();
        lock (blob.Sync)
        {
            for (int c = first; c <= last; c++)
            {
                if (blob.IsServable(c)) continue;
                if (blob.Inflight[c] is { } existing)
                {
                    if (runs.Count == 0 || !ReferenceEquals(runs[^1], existing)) runs.Add(existing);
                    if (priority < existing.Priority) _scheduler.Promote(existing, priority);
                    continue;
                }
                int stop = c;
                while (stop + 1 <= last && stop + 1 - c < maxChunksPerRun && !blob.IsServable(stop + 1) && blob.Inflight[stop + 1] is null)
                    stop++;
                var run = new ChunkRun(blob, location, fileName, c, stop, priority);
                for (int k = c; k <= stop; k++) blob.Inflight[k] = run;
                runs.Add(run);
                toStart.Add(run);
                c = stop;
            }
        }
        foreach (var run in toStart) _scheduler.Enqueue(run);
        return runs;
    }

    private async Task ExecuteAsync(ChunkRun run)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        using var activity = MlfsTelemetry.Source.StartActivity("mlfs.fetch");
        activity?.SetTag("mlfs.file", run.FileName);
        activity?.SetTag("mlfs.chunk.first", run.FirstChunk);
        activity?.SetTag("mlfs.chunk.last", run.LastChunk);
        activity?.SetTag("mlfs.range.start", run.Start);
        activity?.SetTag("mlfs.range.end", run.End);
        activity?.SetTag("mlfs.priority", run.Priority.ToString());
        MlfsTelemetry.FetchesInFlight.Add(1);
        bool reserved = false;
        var leases = new List<string>();
        var state = new FetchState();
        try
        {
            _cache.EnsureRoom(run.End - run.Start);
            reserved = true;
            // 1. Chunks already in the cache: recorded earlier (by this or another process; checked
            //    against their digest) or, with chunk hashes, identical chunks of other blobs (copied
            //    and re-verified). Read-ahead and prefetch runs reach here without the reader's check.
            var missing = new List<int>();
            blob.Refresh();
            for (int c = run.FirstChunk; c <= run.LastChunk; c++)
            {
                if (Adopt(blob, c, run.FileName) || (d.HasChunkHashes && await TryCopyDuplicateAsync(blob, c, buffer).ConfigureAwait(false)))
                    run.ChunkReady(c);
                else missing.Add(c);
            }
            if (!d.HasChunkHashes)
            {
                foreach (var (first, last) in Segments(missing))
                    await FetchRangeAsync(run, d.ChunkStart(first), d.ChunkEnd(last), buffer, state).ConfigureAwait(false);
            }
            else
            {
                // 2. Cross-process single flight: fetch the chunks we lease; wait for those another process is fetching.
                var ours = new List<int>();
                var theirs = new List<int>();
                foreach (int c in missing)
                {
                    string key = $"{blob.Name}:{c}";
                    if (await _index.TryLeaseAsync(key, LeaseTime).ConfigureAwait(false))
                    {
                        leases.Add(key);
                        // The lease may be free because its holder just finished: look again before fetching.
                        blob.Refresh();
                        if (Adopt(blob, c, run.FileName)) run.ChunkReady(c);
                        else ours.Add(c);
                    }
                    else theirs.Add(c);
                }
                foreach (var (first, last) in Segments(ours))
                    await FetchRangeAsync(run, d.ChunkStart(first), d.ChunkEnd(last), buffer, state).ConfigureAwait(false);
                if (theirs.Count > 0)
                {
                    Interlocked.Add(ref _stats.ChunksFromOtherProcesses, theirs.Count);
                    var stillMissing = await WaitForOtherProcessAsync(run, theirs).ConfigureAwait(false);
                    foreach (var (first, last) in Segments(stillMissing))
                        await FetchRangeAsync(run, d.ChunkStart(first), d.ChunkEnd(last), buffer, state).ConfigureAwait(false);
                }
            }
            activity?.SetTag("mlfs.attempts", state.Attempts);
            activity?.SetTag("mlfs.bytes", state.Bytes);
            run.Advance(run.End);
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _stats.Failures);
            string reason = e is OperationCanceledException && _shutdown.IsCancellationRequested ? "the mount is stopping" : Describe(e);
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", ErrorKind(e)));
            activity?.SetStatus(ActivityStatusCode.Error, reason);
            if (!_shutdown.IsCancellationRequested && e is not CacheFullException)
                _logger.LogError("fetch {File} bytes {Start}-{End} failed after {Attempts} attempt(s): {Reason}; reads of these bytes get EIO",
                    run.FileName, state.Position, run.End - 1, state.Attempts, reason);
            run.Fail(new IOException($"{run.FileName}: {reason}", e));
        }
        finally
        {
            foreach (var key in leases) _index.ReleaseLease(key);
            MlfsTelemetry.FetchesInFlight.Add(-1);
            if (reserved) _cache.ReleaseReservation(run.End - run.Start);
            ArrayPool<byte>.Shared.Return(buffer);
            lock (blob.Sync)
            {
                for (int c = run.FirstChunk; c <= run.LastChunk; c++)
                    if (ReferenceEquals(blob.Inflight[c], run)) blob.Inflight[c] = null;
            }
            _scheduler.Finished();
        }
    }

    /// <summary>How long another process may hold a chunk's fetch lease (a crashed holder frees it by expiry).</summary>
    private static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(30);

    private sealed class FetchState
    {
        public int Attempts;
        public long Position;
        public long Bytes;
    }

    private static IEnumerable<(int First, int Last)> Segments(List<int> chunks)
    {
        for (int i = 0; i < chunks.Count;)
        {
            int j = i;
            while (j + 1 < chunks.Count && chunks[j + 1] == chunks[j] + 1) j++;
            yield return (chunks[i], chunks[j]);
            i = j + 1;
        }
    }

    /// <summary>Waits (bounded by the lease time) for chunks another process is fetching into the shared cache; returns those that never arrived.</summary>
    private async Task<List<int>> WaitForOtherProcessAsync(ChunkRun run, List<int> chunks)
    {
        var deadline = DateTime.UtcNow + LeaseTime;
        var pending = new List<int>(chunks);
        TakeArrived();
        while (pending.Count > 0 && DateTime.UtcNow < deadline)
        {
            // The other process may have finished or given up (lease gone): then fetch what is left ourselves.
            bool anyFree = false;
            foreach (int c in pending)
                if (await _index.TryLeaseAsync($"{run.Blob.Name}:{c}", TimeSpan.FromMilliseconds(1)).ConfigureAwait(false)) anyFree = true;
            await Task.Delay(anyFree ? 0 : 20, _shutdown.Token).ConfigureAwait(false);
            TakeArrived();
            if (anyFree) break;
        }
        return pending;

        void TakeArrived()
        {
            run.Blob.Refresh();
            pending.RemoveAll(c =>
            {
                if (!Adopt(run.Blob, c, run.FileName)) return false;
                run.ChunkReady(c);
                return true;
            });
        }
    }

    /// <summary>Copies a chunk with the same SHA-256 from another blob of the cache, verifying it again. False when none is usable.</summary>
    private async Task<bool> TryCopyDuplicateAsync(CachedBlob blob, int chunk, byte[] buffer)
    {
        var d = blob.Descriptor;
        string expected = d.ChunkHashes![chunk];
        var locations = await _index.FindAsync(expected).ConfigureAwait(false);
        long length = d.ChunkEnd(chunk) - d.ChunkStart(chunk);
        foreach (var location in locations)
        {
            if (location.BlobName == blob.Name && location.Chunk == chunk) continue;
            string? source = _cache.DataPathOf(location.BlobName);
            long? sourceChunkSize = BlobCache.ChunkSizeOf(location.BlobName);
            if (source is null || sourceChunkSize is null || !File.Exists(source)) continue;
            try
            {
                using var handle = File.OpenHandle(source);
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                var digest = new System.IO.Hashing.XxHash3();
                long sourceOffset = location.Chunk * sourceChunkSize.Value;
                for (long done = 0; done < length;)
                {
                    int want = (int)Math.Min(buffer.Length, length - done);
                    int n = await RandomAccess.ReadAsync(handle, buffer.AsMemory(0, want), sourceOffset + done).ConfigureAwait(false);
                    if (n <= 0) break;
                    hash.AppendData(buffer, 0, n);
                    digest.Append(buffer.AsSpan(0, n));
                    blob.Write(buffer.AsSpan(0, n), d.ChunkStart(chunk) + done);
                    done += n;
                }
                if (Convert.ToHexStringLower(hash.GetHashAndReset()) != expected) continue; // stale or damaged copy: fetch instead
                blob.MarkVerified(chunk, digest.GetCurrentHashAsUInt64());
                Interlocked.Increment(ref _stats.ChunksDeduplicated);
                Interlocked.Add(ref _stats.BytesDeduplicated, length);
                return true;
            }
            catch (IOException) { }
        }
        return false;
    }

    /// <summary>Streams [start, end) of the run's object into the cache with retries, verifying chunk by chunk.</summary>
    private async Task FetchRangeAsync(ChunkRun run, long start, long end, byte[] buffer, FetchState state)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        bool verifyChunks = d.HasChunkHashes;
        if (verifyChunks && run.Priority == FetchPriority.Demand && start == d.ChunkStart(d.ChunkOf(start))
            && await TryFetchChunkInPartsAsync(run, d.ChunkOf(start), state).ConfigureAwait(false))
        {
            start = d.ChunkEnd(d.ChunkOf(start));
            if (start >= end) return;
        }
        using var chunkHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var chunkDigest = new System.IO.Hashing.XxHash3(); // stored in the record to detect later damage on disk
        long pos = start;
        int attempt = 0;
        blob.Preallocate(start, end - start);
        while (pos < end)
        {
            attempt++;
            state.Attempts++;
            long attemptStart = pos;
            var started = Stopwatch.GetTimestamp();
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(_shutdown.Token);
            try
            {
                stall.CancelAfter(_options.StallTimeout);
                Interlocked.Increment(ref _stats.Requests);
                await using var body = await _store.OpenRangeAsync(run.Location, pos, end - pos, stall.Token).ConfigureAwait(false);
                while (pos < end)
                {
                    int chunk = d.ChunkOf(pos);
                    long chunkEnd = d.ChunkEnd(chunk);
                    int want = (int)Math.Min(buffer.Length, chunkEnd - pos);
                    stall.CancelAfter(_options.StallTimeout);
                    int n = await body.ReadAsync(buffer.AsMemory(0, want), stall.Token).ConfigureAwait(false);
                    if (n == 0)
                        throw new ObjectStoreException(ObjectStoreErrorKind.Transient,
                            $"GET {run.Location.Display} bytes {attemptStart}-{end - 1}: body ended after {pos - attemptStart} of {end - attemptStart} bytes");
                    WriteToCache(blob, buffer.AsSpan(0, n), pos, run.FileName);
                    if (verifyChunks)
                    {
                        chunkHash.AppendData(buffer, 0, n);
                        chunkDigest.Append(buffer.AsSpan(0, n));
                    }
                    pos += n;
                    state.Position = pos;
                    state.Bytes += n;
                    Interlocked.Add(ref _stats.BytesFetched, n);
                    MlfsTelemetry.BytesFetched.Add(n);

                    if (pos == chunkEnd)
                    {
                        if (verifyChunks)
                        {
                            string actual = Convert.ToHexStringLower(chunkHash.GetHashAndReset());
                            if (actual != d.ChunkHashes![chunk])
                            {
                                blob.PunchHole(d.ChunkStart(chunk), chunkEnd - d.ChunkStart(chunk));
                                chunkDigest.Reset();
                                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "verification"));
                                pos = d.ChunkStart(chunk);
                                throw new ChunkVerificationException(
                                    $"{run.FileName}: chunk {chunk} (bytes {d.ChunkStart(chunk)}-{chunkEnd - 1}) does not match its SHA-256 " +
                                    $"(expected {d.ChunkHashes[chunk][..16]}…, got {actual[..16]}…): not cached");
                            }
                            ChunkVerified(run, chunk, actual, chunkDigest.GetCurrentHashAsUInt64());
                            chunkDigest.Reset();
                        }
                        else if (blob.MarkLanded(chunk))
                        {
                            _ = Task.Run(() => VerifyWholeFile(run));
                        }
                        Interlocked.Increment(ref _stats.ChunksFetched);
                    }
                    // Seed manifests have no chunk hashes: every landed byte may be served (unverified, counted).
                    if (!verifyChunks) run.Advance(pos);
                }
                MlfsTelemetry.FetchDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds);
            }
            catch (Exception e) when (IsRetryable(e, stall, out string reason) && attempt < _options.MaxAttempts)
            {
                // Resume at the first byte not yet usable: the start of the unverified chunk.
                if (verifyChunks) pos = d.ChunkStart(d.ChunkOf(pos == end ? pos - 1 : pos));
                chunkHash.GetHashAndReset();
                chunkDigest.Reset();
                Interlocked.Increment(ref _stats.Retries);
                TimeSpan delay = Backoff(attempt);
                _logger.LogWarning("fetch {File} bytes {Start}-{End} attempt {Attempt} failed: {Reason}; retrying in {Delay} ms",
                    run.FileName, pos, end - 1, attempt, reason, (int)delay.TotalMilliseconds);
                await Task.Delay(delay, _shutdown.Token).ConfigureAwait(false);
            }
        }
    }

    private const long MinDemandPart = 256 << 10;

    /// <summary>
    /// Fetches one chunk a reader waits on as parallel ranged GETs into memory, verifies it, then caches
    /// it. False (nothing cached, nothing served) when it should not or could not: the caller then
    /// streams the chunk the ordinary way, with its retries. A full cache disk still fails the run.
    /// </summary>
    private async Task<bool> TryFetchChunkInPartsAsync(ChunkRun run, int chunk, FetchState state)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        long chunkStart = d.ChunkStart(chunk);
        int length = (int)(d.ChunkEnd(chunk) - chunkStart);
        int parts = (int)Math.Min(_options.DemandChunkParts, length / MinDemandPart);
        if (parts < 2) return false;
        byte[] data = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            int partSize = (length + parts - 1) / parts;
            using var stall = CancellationTokenSource.CreateLinkedTokenSource(_shutdown.Token);
            stall.CancelAfter(_options.StallTimeout);
            var reads = new Task[parts];
            for (int p = 0; p < parts; p++)
            {
                int from = p * partSize, count = Math.Min(partSize, length - from);
                reads[p] = ReadPartAsync(run.Location, chunkStart + from, data.AsMemory(from, count), stall.Token);
            }
            state.Attempts++;
            // Hash each part as soon as it and those before it are in: only the last part's hashing follows the transfer.
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            try
            {
                for (int p = 0; p < parts; p++)
                {
                    await reads[p].ConfigureAwait(false);
                    int from = p * partSize;
                    hash.AppendData(data, from, Math.Min(partSize, length - from));
                }
            }
            catch
            {
                await stall.CancelAsync().ConfigureAwait(false); // one part failed: stop the others
                throw;
            }
            finally
            {
                // A part that failed: let the others finish (or fail) before the buffer goes back to the pool.
                try { await Task.WhenAll(reads).ConfigureAwait(false); } catch (Exception) { }
            }
            Interlocked.Add(ref _stats.BytesFetched, length);
            MlfsTelemetry.BytesFetched.Add(length);
            state.Bytes += length;

            var bytes = data.AsSpan(0, length);
            string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (actual != d.ChunkHashes![chunk])
            {
                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "verification"));
                _logger.LogWarning("{File}: chunk {Chunk} fetched in {Parts} parts does not match its SHA-256; fetching it again as one stream",
                    run.FileName, chunk, parts);
                Interlocked.Increment(ref _stats.Retries);
                return false;
            }
            WriteToCache(blob, bytes, chunkStart, run.FileName);
            ChunkVerified(run, chunk, actual, System.IO.Hashing.XxHash3.HashToUInt64(bytes));
            Interlocked.Increment(ref _stats.ChunksFetched);
            state.Position = chunkStart + length;
            return true;
        }
        catch (Exception e) when (e is not CacheFullException && !_shutdown.IsCancellationRequested)
        {
            _logger.LogDebug("{File}: chunk {Chunk} in parts failed ({Reason}); fetching it as one stream", run.FileName, chunk, Describe(e));
            Interlocked.Increment(ref _stats.Retries);
            return false;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(data);
        }
    }

    private Task ReadPartAsync(ObjectLocation location, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        Interlocked.Increment(ref _stats.Requests);
        return ReadRangeAsync(location, offset, destination, cancel);
    }

    /// <summary>GETs exactly destination.Length bytes at offset into memory; a short body is a transient error.</summary>
    private async Task ReadRangeAsync(ObjectLocation location, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        await using var body = await _store.OpenRangeAsync(location, offset, destination.Length, cancel).ConfigureAwait(false);
        for (int got = 0; got < destination.Length;)
        {
            int n = await body.ReadAsync(destination[got..], cancel).ConfigureAwait(false);
            if (n == 0) throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {location.Display}: body ended early");
            got += n;
        }
    }

    /// <summary>A fetched chunk matched its SHA-256 and is in the cache file: record it, publish it, release its readers.</summary>
    private void ChunkVerified(ChunkRun run, int chunk, string sha256, ulong digest)
    {
        run.Blob.MarkVerified(chunk, digest);
        _index.Add(run.Blob.Name, [(chunk, sha256)]);
        run.ChunkReady(chunk);
    }

    /// <summary>A recorded chunk becomes servable once its bytes match the recorded digest; damage is logged and re-fetched.</summary>
    private bool Adopt(CachedBlob blob, int chunk, string fileName)
    {
        long damagedBefore = Interlocked.Read(ref blob.DamagedChunks);
        if (blob.TryAdoptRecorded(chunk)) return true;
        if (Interlocked.Read(ref blob.DamagedChunks) != damagedBefore)
        {
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "cache_damaged"));
            _logger.LogWarning("{File}: chunk {Chunk} in the cache file {Path} is damaged (bytes differ from what was verified); dropped and fetched again",
                fileName, chunk, blob.DataPath);
        }
        return false;
    }

    /// <summary>Checks every recorded chunk of a blob in the background, so a fully cached file can open in passthrough.</summary>
    public void Scrub(CachedBlob blob, string fileName) => _ = ScrubAsync(blob, fileName, CancellationToken.None);

    /// <summary>
    /// <see cref="Scrub"/>, awaitable: completes when every recorded chunk was checked (damaged ones are
    /// dropped, to be fetched again), at once when there is nothing to check or a check already runs.
    /// </summary>
    public Task ScrubAsync(CachedBlob blob, string fileName, CancellationToken cancel)
    {
        if (!blob.AllRecorded || blob.IsComplete || Interlocked.Exchange(ref blob.Scrubbing, 1) != 0) return Task.CompletedTask;
        return Task.Run(() =>
        {
            for (int c = 0; c < blob.Descriptor.ChunkCount && !_shutdown.IsCancellationRequested && !cancel.IsCancellationRequested; c++)
                Adopt(blob, c, fileName);
        }, CancellationToken.None);
    }

    /// <summary>Publishes the verified chunks of a blob to the index (once per opened blob), so other files and processes can reuse them.</summary>
    public void Register(CachedBlob blob)
    {
        var d = blob.Descriptor;
        if (!d.HasChunkHashes || Interlocked.Exchange(ref blob.Registered, 1) != 0) return;
        var chunks = new List<(int, string)>();
        for (int c = 0; c < d.ChunkCount; c++)
            if (blob.IsServable(c) || blob.IsRecorded(c)) chunks.Add((c, d.ChunkHashes![c]));
        if (chunks.Count > 0) _index.Add(blob.Name, chunks);
    }

    private void VerifyWholeFile(ChunkRun run)
    {
        try
        {
            if (!run.Blob.VerifyWhole())
            {
                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "verification"));
                _logger.LogError("{File}: {Reason}; further reads get EIO", run.FileName, run.Blob.Poison!.Message);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _logger.LogWarning("{File}: whole-file verification could not run: {Error}", run.FileName, e.Message);
        }
    }

    /// <summary>Set once the cache's disk filled up; reads then go straight to storage (see ReadUncachedAsync).</summary>
    public bool CacheFull => Volatile.Read(ref _cacheFull) != 0;
    private int _cacheFull;

    private const int ENOSPC = 28, EDQUOT = 122;

    private void WriteToCache(CachedBlob blob, ReadOnlySpan<byte> bytes, long offset, string fileName)
    {
        try
        {
            blob.Write(bytes, offset);
        }
        catch (IOException e) when ((e.HResult & 0xFFFF) is ENOSPC or EDQUOT)
        {
            if (Interlocked.Exchange(ref _cacheFull, 1) == 0)
            {
                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "cache_full"));
                _logger.LogWarning("the cache disk is full ({Root}, writing {File}): serving reads straight from storage, uncached, until there is room; free space or lower --cache-size",
                    _cache.Root, fileName);
            }
            int chunk = blob.Descriptor.ChunkOf(offset);
            blob.PunchHole(blob.Descriptor.ChunkStart(chunk), blob.Descriptor.ChunkEnd(chunk) - blob.Descriptor.ChunkStart(chunk));
            throw new CacheFullException($"{fileName}: the cache disk is full", e);
        }
    }

    /// <summary>
    /// Degraded path when the cache cannot be written: fetches the chunks covering the read into
    /// memory, verifies them, and copies out the bytes asked for. Nothing is cached; nothing
    /// unverified is served (seed manifests: as the seed does, counted as unverified).
    /// </summary>
    public async Task<int> ReadUncachedAsync(CachedBlob blob, ObjectLocation location, string fileName, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        var d = blob.Descriptor;
        int length = (int)Math.Min(destination.Length, d.Size - offset);
        if (length <= 0) return 0;
        long start = d.HasChunkHashes ? d.ChunkStart(d.ChunkOf(offset)) : offset;
        long end = d.HasChunkHashes ? d.ChunkEnd(d.ChunkOf(offset + length - 1)) : offset + length;
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)(end - start));
        try
        {
            for (int attempt = 1; ; attempt++)
            {
                try
                {
                    using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancel, _shutdown.Token);
                    stall.CancelAfter(_options.StallTimeout);
                    await ReadRangeAsync(location, start, buffer.AsMemory(0, (int)(end - start)), stall.Token).ConfigureAwait(false);
                    Interlocked.Add(ref _stats.BytesFetched, end - start);
                    if (d.HasChunkHashes)
                        for (int c = d.ChunkOf(start); c <= d.ChunkOf(end - 1); c++)
                        {
                            var bytes = buffer.AsSpan((int)(d.ChunkStart(c) - start), (int)(d.ChunkEnd(c) - d.ChunkStart(c)));
                            if (Convert.ToHexStringLower(SHA256.HashData(bytes)) != d.ChunkHashes![c])
                                throw new ChunkVerificationException($"{fileName}: chunk {c} does not match its SHA-256");
                        }
                    else
                    {
                        Interlocked.Add(ref _stats.UnverifiedBytesServed, length);
                        MlfsTelemetry.UnverifiedBytesServed.Add(length);
                    }
                    buffer.AsSpan((int)(offset - start), length).CopyTo(destination.Span);
                    return length;
                }
                catch (Exception e) when (!cancel.IsCancellationRequested && attempt < _options.MaxAttempts
                                          && e is ObjectStoreException { IsTransient: true } or ChunkVerificationException or IOException or OperationCanceledException)
                {
                    Interlocked.Increment(ref _stats.Retries);
                    await Task.Delay(Backoff(attempt), cancel).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private bool IsRetryable(Exception e, CancellationTokenSource stall, out string reason)
    {
        reason = Describe(e);
        if (_shutdown.IsCancellationRequested || e is CacheFullException) return false;
        return e switch
        {
            ObjectStoreException s => s.IsTransient,
            ChunkVerificationException => true,
            OperationCanceledException when stall.IsCancellationRequested => SetReason(out reason, $"no data for {_options.StallTimeout.TotalSeconds:0.#} s (stalled)"),
            IOException or HttpRequestException => true,
            _ => false,
        };

        static bool SetReason(out string r, string text)
        {
            r = text;
            return true;
        }
    }

    private static string Describe(Exception e) => e switch
    {
        ObjectStoreException or ChunkVerificationException or CacheFullException => e.Message,
        IOException io => $"connection error ({io.Message})",
        HttpRequestException http => $"connection error ({http.HttpRequestError})",
        OperationCanceledException => "cancelled",
        _ => e.GetType().Name + ": " + e.Message,
    };

    private static string ErrorKind(Exception e) => e switch
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
        double cap = Math.Min(_options.RetryMaxDelay.TotalMilliseconds, _options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, attempt - 1));
        return TimeSpan.FromMilliseconds(Random.Shared.NextDouble() * cap);
    }

    public void Dispose()
    {
        _shutdown.Cancel();
        _shutdown.Dispose();
    }
}

/// <summary>The cache's disk is full: the fetch is abandoned and readers fall back to uncached reads.</summary>
public sealed class CacheFullException(string message, Exception inner) : IOException(message, inner);
