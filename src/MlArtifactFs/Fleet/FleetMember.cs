using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fetching.Sources;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fleet;

/// <summary>
/// This node's part in the fleet: the chunks it holds (served by its <see cref="PeerServer"/> and
/// announced in the <see cref="FleetIndex"/>, refreshed so a dead node drops out), and its tier of the
/// fetch path (<see cref="CreateSource"/>): a peer that holds a cold chunk, else the fleet lease (one
/// node goes to storage, the others wait for it, bounded, then copy), else storage.
/// </summary>
public sealed class FleetMember : IAsyncDisposable, IChunkHolders
{
    private readonly BlobCache _cache;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _refreshing;

    /// <param name="redis">The connection of the cache's chunk index: one connection (and one connect at start) for both.</param>
    public FleetMember(FleetOptions options, StackExchange.Redis.ConnectionMultiplexer redis, BlobCache cache, ILogger logger)
    {
        Options = options;
        _cache = cache;
        _logger = logger;
        Held = new HeldChunks();
        Server = new PeerServer(options.Listen, options.Token, Held, cache, logger);
        Index = new FleetIndex(redis, options.Token, options.Advertise, options.HolderTtl, options.LeaseTime, logger);
        Client = new PeerClient(options);
        Held.Forgotten += id => _ = Index.WithdrawAsync([id]);
        cache.BlobEvicted += ForgetBlob;
        cache.ChunkEvicted += ForgetChunk;
        _refreshing = RefreshLoopAsync();
        logger.LogInformation("fleet: serving verified chunks on {Listen} (advertised as {Advertise}); holders index {Index}",
            Server.EndPoint, options.Advertise, Index.Describe());
    }

    public FleetOptions Options { get; }
    private HeldChunks Held { get; }
    private PeerServer Server { get; }
    private FleetIndex Index { get; }
    private PeerClient Client { get; }

    /// <summary>The fleet's tier of the fetch path, for the mount's chain of sources.</summary>
    internal IChunkSource CreateSource(ChunkSink sink, CounterSet counters, CancellationToken shutdown) =>
        new FleetSource(Index, Client, Options, sink, counters, _logger, shutdown);

    /// <summary>A chunk verified and stored (or adopted after hashing) here: serve it, and say so.</summary>
    public void Hold(CachedBlob blob, int chunk)
    {
        var d = blob.Descriptor;
        var id = d.ChunkId(chunk);
        if (Held.Add(id, new HeldChunk(blob.Name, chunk, d.ChunkLength(chunk)))) _ = Index.AnnounceAsync([id]);
    }

    /// <summary>What `mlfs status` shows of the fleet.</summary>
    public FleetStatus Status() => new()
    {
        Listen = Server.EndPoint.ToString(),
        Advertise = Options.Advertise.ToString(),
        Index = Index.Describe(),
        ChunksHeld = Held.Count,
        ChunksServed = Interlocked.Read(ref Server.ChunksServed),
        BytesServed = Interlocked.Read(ref Server.BytesServed),
        Unauthorized = Interlocked.Read(ref Server.Unauthorized),
        IgnoredHolderEntries = Index.IgnoredEntries,
        Peers = Client.Peers.ToDictionary(p => p.Key, p => new PeerStatus
        {
            Chunks = Interlocked.Read(ref p.Value.Chunks),
            Bytes = Interlocked.Read(ref p.Value.Bytes),
            Failures = Interlocked.Read(ref p.Value.Failures),
        }),
    };

    /// <summary>Evicted here: peers stop being sent to this node for it at once.</summary>
    private void ForgetChunk(ChunkedBlob blob, int chunk, long freed)
    {
        var id = blob.Descriptor.ChunkId(chunk);
        if (Held.TryGet(id, out var held) && held.BlobName == blob.Name && held.Chunk == chunk) Held.Forget(id);
    }

    private void ForgetBlob(string blobName, long freed) => ForgetBlob(blobName);

    private void ForgetBlob(string blobName)
    {
        foreach (var (id, held) in Held.All.ToList())
            if (held.BlobName == blobName) Held.Forget(id);
    }

    /// <summary>Re-announces what is held before the entries lapse; forgets blobs another process evicted.</summary>
    private async Task RefreshLoopAsync()
    {
        var period = Options.HolderTtl / 3;
        while (!_stop.IsCancellationRequested)
        {
            try { await Task.Delay(period, _stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            try
            {
                foreach (var blob in Held.All.Select(h => h.Value.BlobName).Distinct().ToList())
                    if (!_cache.HasBlobData(blob)) ForgetBlob(blob);
                await Index.AnnounceAsync(Held.Ids).ConfigureAwait(false);
            }
            catch (Exception e) { _logger.LogDebug("fleet: refresh failed: {Error}", e.Message); }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        try { await _refreshing.ConfigureAwait(false); } catch (Exception) { }
        _cache.BlobEvicted -= ForgetBlob;
        _cache.ChunkEvicted -= ForgetChunk;
        // Leaving: others stop asking at once rather than after the TTL.
        try { await Index.WithdrawAsync(Held.Ids).WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false); } catch (TimeoutException) { }
        await Server.DisposeAsync().ConfigureAwait(false);
        Client.Dispose();
        _stop.Dispose();
    }
}
