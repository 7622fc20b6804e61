using System.Buffers;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fleet;
using MlArtifactFs.Index;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Makes byte ranges of blobs servable: finds the chunks this process cannot serve yet, gets each
/// one once however many readers (and prefetchers) want it, and releases each waiting reader as soon
/// as its own chunks are verified and stored.
/// <para>
/// A run takes, in order: chunks recorded in the cache (by an earlier run or another process), each
/// hashed against the reader's chunk hash before it counts; identical chunks of other blobs named by
/// the chunk index (copied into memory, verified, then written); chunks another process holds the
/// fetch lease for (waited for, bounded); and the rest from storage through the <see cref="RangeSource"/>,
/// each chunk verified in memory before it touches the shared file.
/// </para>
/// <para>
/// A run holds a reference on its blob until it ends, so neither the idle pool nor eviction can close
/// the files under it. A failure reaches the reader as an exception (EIO), never as wrong bytes.
/// When the cache's disk is full, readers fall back to <see cref="ReadUncachedAsync"/>.
/// </para>
/// </summary>
public sealed class ChunkFetcher : IDisposable
{
    private readonly BlobCache _cache;
    private readonly FetcherOptions _options;
    private readonly FetchStatistics _stats;
    private readonly ILogger _logger;
    private readonly FetchScheduler _scheduler;
    private readonly SingleFlight _flights = new();
    private readonly RangeSource _source;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly IChunkIndex _index;

    public ChunkFetcher(IObjectStore store, BlobCache cache, FetcherOptions options, FetchStatistics stats, ILogger logger, IChunkIndex? index = null)
    {
        _index = index ?? new LocalChunkIndex();
        _cache = cache;
        _options = options;
        _stats = stats;
        _logger = logger;
        _source = new RangeSource(store, options, stats, logger, _shutdown.Token);
        Buffers = new ChunkBuffers(options.BufferBudgetBytes);
        _scheduler = new FetchScheduler(options.MaxConcurrentFetches, run => _ = Task.Run(() => ExecuteAsync(run)));
    }

    public FetcherOptions Options => _options;

    /// <summary>Fleet mode: cold chunks come from peers that hold them before storage (null: storage only).</summary>
    public FleetMember? Fleet { get; init; }

    /// <summary>The budget every chunk-sized buffer comes from.</summary>
    public ChunkBuffers Buffers { get; }

    /// <summary>How long another process may hold a chunk's fetch lease (a crashed holder frees it by expiry).</summary>
    private static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(30);

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
            long end = offset + length;
            var runs = self.Schedule(blob, location, fileName, offset, end, priority);
            foreach (var run in runs)
                await run.WaitAsync(Math.Min(end, run.End)).WaitAsync(cancel).ConfigureAwait(false);
            if (blob.Poison is { } poison) throw poison;
            // The one boundary every reader passes: whatever the runs did, only verified chunks are read.
            // (Whole files are served as they land, from this process's private file: seed-format semantics.)
            if (blob.Descriptor.HasChunkHashes && !blob.IsRangeServable(offset, length))
                throw new ChunksNotStoredException($"{fileName}: bytes {offset}-{end - 1} verified but not all could be stored");
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
        int first = d.ChunkOf(offset), last = d.ChunkOf(end - 1);
        int maxChunksPerRun = (int)Math.Max(1, _options.MaxRequestBytes / d.ChunkSize);
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
                    if (priority < existing.Priority) _scheduler.Promote(existing, priority);
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
        foreach (var run in toStart) _scheduler.Enqueue(run);
        return runs;
    }

    private async Task ExecuteAsync(ChunkRun run)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        Interlocked.Increment(ref _activeRuns);
        // The run's GETs are children of its own span, whichever read's context this task was started from.
        Activity.Current = run.Trace;
        MlfsTelemetry.FetchesInFlight.Add(1);
        bool reserved = false;
        var leases = new List<string>();
        var fleetLeases = new List<string>();
        var progress = run.Progress;
        ChunkBuffers.Rental? chunkBuffer = null;
        try
        {
            _cache.EnsureRoom(run.End - run.Start);
            reserved = true;
            if (d.HasChunkHashes)
            {
                // Two chunks when the budget allows (one streams while the other is written), else one.
                int bytes = 2 * d.ChunkSize <= Buffers.Budget / 2 ? (int)(2 * d.ChunkSize) : (int)d.ChunkSize;
                chunkBuffer = await Buffers.RentAsync(bytes, _shutdown.Token).ConfigureAwait(false);
                await FetchChunkedAsync(run, chunkBuffer.Memory, leases, fleetLeases, progress).ConfigureAwait(false);
            }
            else await FetchWholeAsync(run, progress).ConfigureAwait(false);
            run.Advance(run.End);
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _stats.Failures);
            string reason = e is OperationCanceledException && _shutdown.IsCancellationRequested ? "the mount is stopping" : RangeSource.Describe(e);
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", RangeSource.ErrorKind(e)));
            if (e is CacheFullException) NoteCacheFull(run.FileName);
            else if (!_shutdown.IsCancellationRequested)
                _logger.LogError("fetch {File} bytes {Start}-{End} failed after {Attempts} attempt(s): {Reason}; reads of these bytes get EIO",
                    run.FileName, progress.Position, run.End - 1, progress.Attempts, reason);
            run.Fail(new IOException($"{run.FileName}: {reason}", e));
        }
        finally
        {
            run.EndTrace();
            foreach (var key in leases) _index.ReleaseLease(key);
            foreach (var sha in fleetLeases) Fleet!.Index.ReleaseLease(sha);
            MlfsTelemetry.FetchesInFlight.Add(-1);
            if (reserved) _cache.ReleaseReservation(run.End - run.Start);
            chunkBuffer?.Dispose();
            _flights.Finished(run);
            _cache.Release(blob);
            _scheduler.Finished();
            Interlocked.Decrement(ref _activeRuns);
        }
    }

    /// <summary>A chunked run: adopt, copy duplicates, wait for other processes, fetch the rest; every chunk verified before it counts.</summary>
    private async Task FetchChunkedAsync(ChunkRun run, Memory<byte> buffer, List<string> leases, List<string> fleetLeases, FetchProgress progress)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        var missing = new List<int>();
        blob.Refresh();
        for (int c = run.FirstChunk; c <= run.LastChunk; c++)
        {
            if (Adopt(blob, c, run.FileName) || await TryCopyDuplicateAsync(blob, c, buffer).ConfigureAwait(false)) run.ChunkReady(c);
            else missing.Add(c);
        }
        // Cross-process single flight: fetch the chunks we lease; wait for those another process is fetching.
        var ours = new List<int>();
        var theirs = new List<int>();
        foreach (int c in missing)
        {
            string key = $"{blob.Name}:{c}";
            if (await _index.TryLeaseAsync(key, LeaseTime).ConfigureAwait(false))
            {
                leases.Add(key);
                blob.Refresh(); // the lease may be free because its holder just finished: look again before fetching
                if (Adopt(blob, c, run.FileName)) run.ChunkReady(c);
                else ours.Add(c);
            }
            else theirs.Add(c);
        }
        if (Fleet is not null && ours.Count > 0) ours = await FromFleetAsync(run, ours, buffer, fleetLeases, progress).ConfigureAwait(false);
        foreach (var (first, last) in Segments(ours))
            await FetchChunksAsync(run, first, last, buffer, progress).ConfigureAwait(false);
        if (theirs.Count > 0)
        {
            Interlocked.Add(ref _stats.ChunksFromOtherProcesses, theirs.Count);
            var stillMissing = await WaitForOtherProcessAsync(run, theirs).ConfigureAwait(false);
            foreach (var (first, last) in Segments(stillMissing))
                await FetchChunksAsync(run, first, last, buffer, progress).ConfigureAwait(false);
        }
    }

    /// <summary>Streams chunks [first, last] from storage, each verified in <paramref name="buffer"/> before it is written.</summary>
    private async Task FetchChunksAsync(ChunkRun run, int first, int last, Memory<byte> buffer, FetchProgress progress)
    {
        var d = run.Blob.Descriptor;
        if (run.Priority == FetchPriority.Demand && await TryFetchChunkInPartsAsync(run, first, buffer, progress).ConfigureAwait(false))
        {
            if (first == last) return;
            first++;
        }
        run.Blob.Preallocate(d.ChunkStart(first), d.ChunkEnd(last) - d.ChunkStart(first));
        using var consumer = new VerifyingConsumer(run, buffer, ChunkStaged, ChunkStore);
        try
        {
            await _source.StreamAsync(run.Location, run.FileName, d.ChunkStart(first), d.ChunkEnd(last), consumer, progress).ConfigureAwait(false);
        }
        finally
        {
            // Never let the buffer go back to the pool while a write still reads it. (A failed stream's own
            // error is the one reported; a failed write alone is reported below.)
            try { await consumer.DrainAsync().ConfigureAwait(false); }
            catch (Exception) { }
        }
        await consumer.DrainAsync().ConfigureAwait(false); // its failure, if the stream itself succeeded
    }

    /// <summary>A whole-file run: adopt a shared verified copy, or land the missing chunks privately; the last landing verifies the file.</summary>
    private async Task FetchWholeAsync(ChunkRun run, FetchProgress progress)
    {
        var blob = run.Blob;
        var d = blob.Descriptor;
        if (blob.AllRecorded)
        {
            if (await blob.TryAdoptWhole(_cache.PrivateDirectory).ConfigureAwait(false)) return;
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "cache_damaged"));
            _logger.LogWarning("{File}: the cached copy {Path} does not match its sha256; set aside and fetched again", run.FileName, blob.DataPath);
        }
        byte[] buffer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        try
        {
            var consumer = new LandingConsumer(run, buffer.AsMemory(0, _options.BufferSize), () => Interlocked.Increment(ref _stats.ChunksFetched));
            var missing = new List<int>();
            for (int c = run.FirstChunk; c <= run.LastChunk; c++)
                if (!blob.IsServable(c)) missing.Add(c);
            foreach (var (first, last) in Segments(missing))
                await _source.StreamAsync(run.Location, run.FileName, d.ChunkStart(first), d.ChunkEnd(last), consumer, progress).ConfigureAwait(false);
            if (consumer.LandedLast) VerifyWholeFile(run);
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
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

    /// <summary>
    /// Copies a chunk with the same SHA-256 from another blob named by the chunk index: into memory,
    /// verified against this blob's hash, then written. False when no named copy is usable.
    /// </summary>
    private async Task<bool> TryCopyDuplicateAsync(CachedBlob blob, int chunk, Memory<byte> buffer)
    {
        var d = blob.Descriptor;
        var locations = await _index.FindAsync(d.ChunkHashes![chunk]).ConfigureAwait(false);
        var bytes = buffer[..d.ChunkLength(chunk)];
        foreach (var location in locations)
        {
            if (location.BlobName == blob.Name && location.Chunk == chunk) continue;
            if (!_cache.TryReadIndexedChunk(location.BlobName, location.Chunk, bytes)) continue;
            if (!ChunkVerifier.TryVerify(d, chunk, bytes, out var verified))
            {
                Interlocked.Increment(ref _cache.IgnoredIndexEntries); // stale or damaged copy: fetch instead
                continue;
            }
            try { blob.WriteVerified(verified); }
            catch (CacheFullException) { throw; }
            catch (IOException) { return false; }
            _index.Add(blob.Name, [(chunk, d.ChunkHashes[chunk])]);
            Fleet?.Hold(d.ChunkHashes[chunk], blob.Name, chunk, bytes.Length);
            Interlocked.Increment(ref _stats.ChunksDeduplicated);
            Interlocked.Add(ref _stats.BytesDeduplicated, bytes.Length);
            return true;
        }
        return false;
    }

    private const long MinDemandPart = 256 << 10;

    /// <summary>
    /// Fetches one chunk a reader waits on as parallel ranged GETs into memory, verifies it, then caches
    /// it. False (nothing cached, nothing served) when it should not or could not: the caller then
    /// streams the chunk the ordinary way, with its retries. A full cache disk still fails the run.
    /// </summary>
    private async Task<bool> TryFetchChunkInPartsAsync(ChunkRun run, int chunk, Memory<byte> buffer, FetchProgress progress)
    {
        var d = run.Blob.Descriptor;
        int length = d.ChunkLength(chunk);
        int parts = (int)Math.Min(_options.DemandChunkParts, length / MinDemandPart);
        if (parts < 2) return false;
        var bytes = buffer[..length];
        try
        {
            progress.Attempts++;
            await _source.ReadInPartsAsync(run.Location, d.ChunkStart(chunk), bytes, parts).ConfigureAwait(false);
            progress.Bytes += length;
            bool ok;
            VerifiedChunk verified;
            using (var verify = run.StartChild("mlfs.verify"))
            {
                verify?.SetTag("mlfs.chunk", chunk);
                verify?.SetTag("mlfs.bytes", length);
                ok = ChunkVerifier.TryVerify(d, chunk, bytes, out verified);
                verify?.SetTag("mlfs.verified", ok);
                if (!ok) verify?.SetStatus(ActivityStatusCode.Error, "SHA-256 mismatch");
            }
            if (!ok)
            {
                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "verification"));
                _logger.LogWarning("{File}: chunk {Chunk} fetched in {Parts} parts does not match its SHA-256; fetching it again as one stream",
                    run.FileName, chunk, parts);
                Interlocked.Increment(ref _stats.Retries);
                return false;
            }
            ChunkVerified(run, verified);
            progress.Position = d.ChunkEnd(chunk);
            return true;
        }
        catch (Exception e) when (e is not CacheFullException && !_shutdown.IsCancellationRequested)
        {
            _logger.LogDebug("{File}: chunk {Chunk} in parts failed ({Reason}); fetching it as one stream", run.FileName, chunk, RangeSource.Describe(e));
            Interlocked.Increment(ref _stats.Retries);
            return false;
        }
    }

    /// <summary>
    /// Fleet mode, for chunks this process is to fetch: each from a peer that holds it; else, under the
    /// fleet lease, from storage (first: other nodes may wait for those); else it waits, bounded, for the
    /// node that leased it and copies from it. Returns the chunks still to get from storage (hedges).
    /// </summary>
    private async Task<List<int>> FromFleetAsync(ChunkRun run, List<int> chunks, Memory<byte> buffer, List<string> fleetLeases, FetchProgress progress)
    {
        var fleet = Fleet!;
        var d = run.Blob.Descriptor;
        var toStorage = new List<int>();
        var waitFor = new List<int>();
        foreach (int c in chunks)
        {
            if (await TryPeersAsync(run, c, buffer).ConfigureAwait(false)) continue;
            switch (await LeaseAsync(run, c, buffer, fleetLeases).ConfigureAwait(false))
            {
                case FleetLease.Ours: toStorage.Add(c); break;
                case FleetLease.Theirs: waitFor.Add(c); break;
            }
        }
        if (waitFor.Count == 0) return toStorage;
        foreach (var (first, last) in Segments(toStorage))
            await FetchChunksAsync(run, first, last, buffer, progress).ConfigureAwait(false);
        var hedged = new List<int>();
        foreach (int c in waitFor)
        {
            Interlocked.Increment(ref _stats.FleetWaits);
            var deadline = DateTime.UtcNow + fleet.Options.PeerWait;
            bool got = false;
            while (!got && DateTime.UtcNow < deadline && !_shutdown.IsCancellationRequested)
            {
                await Task.Delay(20, _shutdown.Token).ConfigureAwait(false);
                if (await TryPeersAsync(run, c, buffer).ConfigureAwait(false)) got = true;
                else
                {
                    var lease = await LeaseAsync(run, c, buffer, fleetLeases).ConfigureAwait(false);
                    if (lease == FleetLease.CopiedFromPeer) got = true;
                    else if (lease == FleetLease.Ours) break; // its fetcher finished without it, gave up or died: ours now
                }
            }
            if (got) continue;
            if (DateTime.UtcNow >= deadline) Interlocked.Increment(ref _stats.FleetHedges);
            hedged.Add(c);
        }
        return hedged;
    }

    private enum FleetLease { Ours, Theirs, CopiedFromPeer }

    /// <summary>
    /// Takes the fleet lease of a chunk. With it, looks for holders once more before going to storage:
    /// a lease is free also just after its holder stored the chunk, announced it and let go.
    /// </summary>
    private async Task<FleetLease> LeaseAsync(ChunkRun run, int chunk, Memory<byte> buffer, List<string> fleetLeases)
    {
        var fleet = Fleet!;
        string sha = run.Blob.Descriptor.ChunkHashes![chunk];
        if (!await fleet.Index.TryLeaseAsync(sha, fleet.Options.LeaseTime).ConfigureAwait(false)) return FleetLease.Theirs;
        if (await TryPeersAsync(run, chunk, buffer).ConfigureAwait(false))
        {
            fleet.Index.ReleaseLease(sha);
            return FleetLease.CopiedFromPeer;
        }
        fleetLeases.Add(sha);
        return FleetLease.Ours;
    }

    /// <summary>One chunk from a peer that holds it: up to three holders, each verified against the reading manifest's hash.</summary>
    private async Task<bool> TryPeersAsync(ChunkRun run, int chunk, Memory<byte> buffer)
    {
        var fleet = Fleet!;
        var d = run.Blob.Descriptor;
        string sha = d.ChunkHashes![chunk];
        var holders = (await fleet.Index.HoldersAsync(sha).ConfigureAwait(false)).Where(p => !fleet.Client.IsSkipped(p)).ToArray();
        if (holders.Length == 0) return false;
        // A random one of the least loaded (by this node's GETs open to each): spreads the load, and each new holder is a source.
        Random.Shared.Shuffle(holders);
        var bytes = buffer[..d.ChunkLength(chunk)];
        foreach (var peer in holders.OrderBy(fleet.Client.InFlight).Take(3))
        {
            var (failure, notHeld) = await fleet.Client.TryGetAsync(peer, sha, bytes, run.FileName, _shutdown.Token).ConfigureAwait(false);
            if (notHeld) continue; // evicted there since it was announced: ask the next holder
            if (failure is null)
            {
                bool ok;
                VerifiedChunk verified;
                using (var verify = run.StartChild("mlfs.verify"))
                {
                    verify?.SetTag("mlfs.chunk", chunk);
                    verify?.SetTag("mlfs.bytes", bytes.Length);
                    ok = ChunkVerifier.TryVerify(d, chunk, bytes, out verified);
                    verify?.SetTag("mlfs.verified", ok);
                    if (!ok) verify?.SetStatus(ActivityStatusCode.Error, "SHA-256 mismatch");
                }
                if (ok)
                {
                    fleet.Client.Credit(peer, bytes.Length);
                    Interlocked.Increment(ref _stats.ChunksFromPeers);
                    Interlocked.Add(ref _stats.BytesFromPeers, bytes.Length);
                    MlfsTelemetry.BytesFetched.Add(bytes.Length, new KeyValuePair<string, object?>("mlfs.source", "peer"));
                    run.Progress.Bytes += bytes.Length;
                    ChunkVerified(run, verified);
                    return true;
                }
                failure = "bytes that do not match the chunk's SHA-256";
            }
            fleet.Client.Penalize(peer);
            Interlocked.Increment(ref _stats.PeerFailures);
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "peer"));
            _logger.LogWarning("fleet: {File} chunk {Chunk} from peer {Peer}: {Failure}; skipping that peer for {Penalty} s",
                run.FileName, chunk, peer, failure, fleet.Options.Penalty.TotalSeconds);
        }
        return false;
    }

    /// <summary>A fetched chunk verified: its readers are answered at once, then it is stored and published.</summary>
    private void ChunkVerified(ChunkRun run, VerifiedChunk chunk)
    {
        ChunkStaged(run, chunk);
        ChunkStore(run, chunk);
    }

    /// <summary>Readers of a just-verified chunk are answered from the buffer it was verified in (no wait for the write).</summary>
    private static void ChunkStaged(ChunkRun run, VerifiedChunk chunk)
    {
        run.Blob.Stage(chunk);
        run.ChunkReady(chunk.Index);
    }

    /// <summary>Writes a verified chunk into the shared cache, records it, and publishes it to the index.</summary>
    private void ChunkStore(ChunkRun run, VerifiedChunk chunk)
    {
        run.Blob.WriteVerified(chunk);
        var d = run.Blob.Descriptor;
        _index.Add(run.Blob.Name, [(chunk.Index, d.ChunkHashes![chunk.Index])]);
        Fleet?.Hold(d.ChunkHashes[chunk.Index], run.Blob.Name, chunk.Index, d.ChunkLength(chunk.Index)); // on disk now: others may have it
        Interlocked.Increment(ref _stats.ChunksFetched);
    }

    /// <summary>A recorded chunk becomes servable once its bytes hash to the reader's chunk hash; damage is logged and re-fetched.</summary>
    private bool Adopt(CachedBlob blob, int chunk, string fileName)
    {
        long damagedBefore = Interlocked.Read(ref blob.DamagedChunks);
        if (blob.TryAdopt(chunk))
        {
            var d = blob.Descriptor;
            if (d.HasChunkHashes) Fleet?.Hold(d.ChunkHashes![chunk], blob.Name, chunk, d.ChunkLength(chunk)); // hashed just now
            return true;
        }
        if (Interlocked.Read(ref blob.DamagedChunks) != damagedBefore)
        {
            MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "cache_damaged"));
            _logger.LogWarning("{File}: chunk {Chunk} in the cache file {Path} is damaged (its bytes do not match the SHA-256 the manifest lists); dropped from the record and fetched again",
                fileName, chunk, blob.DataPath);
        }
        return false;
    }

    /// <summary>Checks what the cache holds of a blob in the background, so a fully cached file can open in passthrough.</summary>
    public void Scrub(CachedBlob blob, string fileName)
    {
        _cache.Retain(blob); // held until the check ends, like a run
        _ = ScrubAsync(blob, fileName, CancellationToken.None).ContinueWith(_ => _cache.Release(blob), TaskScheduler.Default);
    }

    /// <summary>
    /// <see cref="Scrub"/>, awaitable: completes when every recorded chunk (or a shared whole file) was
    /// hashed against this blob's hashes (damage is dropped, to be fetched again), at once when there is
    /// nothing to check or a check already runs. The caller holds the blob open until it completes.
    /// </summary>
    public Task ScrubAsync(CachedBlob blob, string fileName, CancellationToken cancel)
    {
        if (!blob.AllRecorded || blob.IsComplete || Interlocked.Exchange(ref blob.Scrubbing, 1) != 0) return Task.CompletedTask;
        if (!blob.Descriptor.HasChunkHashes) return blob.TryAdoptWhole(_cache.PrivateDirectory);
        return Task.Run(() =>
        {
            for (int c = 0; c < blob.Descriptor.ChunkCount && !_shutdown.IsCancellationRequested && !cancel.IsCancellationRequested; c++)
                Adopt(blob, c, fileName);
        }, CancellationToken.None);
    }

    /// <summary>Publishes the recorded chunks of a blob to the index (once per opened blob), so other files and processes can find them.</summary>
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
        // Its own short trace: the file's readers were answered as its bytes landed, before this check.
        using var verify = MlfsTelemetry.StartDetached("mlfs.verify", default);
        verify?.SetTag("mlfs.file", run.FileName);
        verify?.SetTag("mlfs.bytes", run.Blob.Descriptor.Size);
        if (run.Trace is { } fetched) verify?.AddLink(new ActivityLink(fetched.Context));
        try
        {
            bool ok = run.Blob.CompleteWhole();
            verify?.SetTag("mlfs.verified", ok);
            if (!ok)
            {
                verify?.SetStatus(ActivityStatusCode.Error, "whole-file SHA-256 mismatch");
                MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "verification"));
                _logger.LogError("{File}: {Reason}; further reads get EIO", run.FileName, run.Blob.Poison!.Message);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            run.Blob.PoisonWith(new IOException($"{run.FileName}: whole-file verification could not run: {e.Message}", e));
            _logger.LogError("{File}: whole-file verification could not run: {Error}; further reads get EIO", run.FileName, e.Message);
        }
    }

    /// <summary>Set once the cache's disk filled up; reads then go straight to storage (see ReadUncachedAsync).</summary>
    public bool CacheFull => Volatile.Read(ref _cacheFull) != 0;
    private int _cacheFull;

    private void NoteCacheFull(string fileName)
    {
        if (Interlocked.Exchange(ref _cacheFull, 1) != 0) return;
        MlfsTelemetry.Errors.Add(1, new KeyValuePair<string, object?>("kind", "cache_full"));
        _logger.LogWarning("the cache disk is full ({Root}, writing {File}): serving reads straight from storage, uncached, until there is room; free space or lower --cache-size",
            _cache.Root, fileName);
    }

    /// <summary>
    /// Degraded path when the cache cannot be written: fetches the chunks covering the read into
    /// memory (from the buffer budget), verifies them, and copies out the bytes asked for. Nothing is
    /// cached; nothing unverified is served (files without chunk hashes: as the seed does, counted).
    /// </summary>
    public async Task<int> ReadUncachedAsync(CachedBlob blob, ObjectLocation location, string fileName, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        var d = blob.Descriptor;
        int length = (int)Math.Min(destination.Length, d.Size - offset);
        if (length <= 0) return 0;
        long start = d.HasChunkHashes ? d.ChunkStart(d.ChunkOf(offset)) : offset;
        long end = d.HasChunkHashes ? d.ChunkEnd(d.ChunkOf(offset + length - 1)) : offset + length;
        using var rental = await Buffers.RentAsync((int)(end - start), cancel).ConfigureAwait(false);
        var bytes = rental.Memory;
        await _source.ReadWithRetriesAsync(location, start, bytes, () =>
        {
            if (!d.HasChunkHashes) return;
            for (int c = d.ChunkOf(start); c <= d.ChunkOf(end - 1); c++)
                ChunkVerifier.Verify(d, c, bytes.Slice((int)(d.ChunkStart(c) - start), d.ChunkLength(c)), fileName);
        }, cancel).ConfigureAwait(false);
        if (!d.HasChunkHashes)
        {
            Interlocked.Add(ref _stats.UnverifiedBytesServed, length);
            MlfsTelemetry.UnverifiedBytesServed.Add(length);
        }
        bytes.Slice((int)(offset - start), length).CopyTo(destination);
        return length;
    }

    private int _activeRuns;

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

/// <summary>A wait ended with chunks that verified but could not be stored (a write failed): read them uncached.</summary>
public sealed class ChunksNotStoredException(string message) : IOException(message);
