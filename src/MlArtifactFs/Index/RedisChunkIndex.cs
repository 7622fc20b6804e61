using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using StackExchange.Redis;

namespace MlArtifactFs.Index;

/// <summary>
/// The chunk index in Redis, shared by every mlfs process using the same cache directory (keys are
/// namespaced by a hash of its path):
/// <list type="bullet">
/// <item><c>mlfs:NS:chunk:ID</c> hash (ID = <c>sha256:HEX</c> or <c>blake3:HEX</c>): blob name -> chunk index, for every verified chunk.</item>
/// <item><c>mlfs:NS:lease:KEY</c>: a fetch lease (SET NX PX) so two processes fetch a cold chunk once.</item>
/// </list>
/// Redis is an accelerator, never the source of truth: every call has a short timeout; when Redis is
/// down, lookups use the in-process index and leases are granted (each process fetches for itself).
/// Everything learned while it was down is republished when the connection comes back.
/// Its entries are input (anyone who reaches Redis can write them): a location that does not parse is
/// ignored, one that parses is only a hint the cache checks and re-verifies, and a lease without a TTL
/// (or with one far beyond ours) is ignored, so no planted key can stall a fetch. All are counted.
/// </summary>
public sealed class RedisChunkIndex : IChunkIndex
{
    private readonly ConnectionMultiplexer _redis;
    private readonly LocalChunkIndex _local = new();
    private readonly ILogger _logger;
    private readonly string _prefix;
    private readonly string _owner = $"{Environment.ProcessId}-{Guid.NewGuid():N}";
    private readonly string _endpoint;
    private readonly RedisOwnerBreaker _breaker;
    private readonly RedisLeases _leases;
    private int _warned;
    private long _ignored;

    public long IgnoredEntries => Interlocked.Read(ref _ignored) + _leases.Ignored;

    private RedisChunkIndex(ConnectionMultiplexer redis, string endpoint, string cacheRoot, ILogger logger)
    {
        _redis = redis;
        _endpoint = endpoint;
        _logger = logger;
        _breaker = new RedisOwnerBreaker(redis, TimeSpan.FromSeconds(10));
        _leases = new RedisLeases(redis, _breaker, _owner, MaxBelievableLease, logger);
        _prefix = "mlfs:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(cacheRoot)))[..12] + ":";
        _redis.ConnectionRestored += (_, _) => _ = Task.Run(RepublishAsync);
        _redis.ConnectionFailed += (_, e) => Warn($"Redis {_endpoint} connection lost ({e.FailureType}); reads go on without the shared index");
    }

    /// <summary>Connects (without failing when Redis is down: that is a warning, and it keeps retrying).</summary>
    public static RedisChunkIndex Connect(string configuration, string cacheRoot, ILogger logger)
    {
        var options = ConfigurationOptions.Parse(configuration);
        options.AbortOnConnectFail = false; // Redis down at start is a warning, never a failed mount
        options.ConnectTimeout = 2000;
        options.SyncTimeout = 1000;
        options.AsyncTimeout = 1000;
        options.ConnectRetry = 1;
        options.ClientName = "mlfs";
        var redis = ConnectionMultiplexer.Connect(options);
        string endpoint = string.Join(",", options.EndPoints.Select(e => e.ToString()));
        var index = new RedisChunkIndex(redis, endpoint, cacheRoot, logger);
        if (!redis.IsConnected)
            index.Warn($"Redis {endpoint} is unreachable; mounting without the shared chunk index (retrying in the background)");
        return index;
    }

    public bool IsConnected => _redis.IsConnected;

    /// <summary>The connection, for the fleet's holders index to share (this index owns and closes it).</summary>
    internal ConnectionMultiplexer Connection => _redis;

    private IDatabase Db => _redis.GetDatabase();

    private void Warn(string message)
    {
        if (Interlocked.Exchange(ref _warned, 1) == 0) _logger.LogWarning("{Message}", message);
        else _logger.LogDebug("{Message}", message);
    }

    public async ValueTask<IReadOnlyList<ChunkLocation>> FindAsync(ChunkId chunk)
    {
        var local = await _local.FindAsync(chunk).ConfigureAwait(false);
        string key = _prefix + "chunk:" + chunk;
        if (!_redis.IsConnected || !_breaker.Allows(key)) return local;
        try
        {
            var entries = await Db.HashGetAllAsync(key).ConfigureAwait(false);
            var found = new List<ChunkLocation>();
            foreach (var e in entries)
            {
                string name = e.Name.ToString();
                if (name.Length is 0 or > 128 || !int.TryParse(e.Value.ToString(), System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out int index))
                {
                    Interlocked.Increment(ref _ignored);
                    continue;
                }
                found.Add(new ChunkLocation(name, index)); // a negative chunk or a foreign name is refused (and counted) by the cache
            }
            foreach (var l in local) if (!found.Contains(l)) found.Add(l);
            return found;
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            _breaker.Failed(key);
            Warn($"Redis lookup failed ({e.GetType().Name}); using the in-process index");
            return local;
        }
    }

    public void Add(string blobName, IReadOnlyList<(int Chunk, ChunkId Id)> chunks)
    {
        _local.Add(blobName, chunks);
        if (!_redis.IsConnected) return; // republished on reconnect
        try
        {
            var batch = Db.CreateBatch();
            foreach (var (chunk, id) in chunks)
                _ = batch.HashSetAsync(_prefix + "chunk:" + id, blobName, chunk, flags: CommandFlags.FireAndForget);
            batch.Execute();
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            Warn($"Redis update failed ({e.GetType().Name}); it will be republished on reconnect");
        }
    }

    public void Remove(string blobName, int chunk, ChunkId id)
    {
        _local.Remove(blobName, chunk, id);
        if (!_redis.IsConnected) return;
        try
        {
            // Only if it still names this chunk of the blob (the same content may sit at several places of one file).
            var transaction = Db.CreateTransaction();
            string key = _prefix + "chunk:" + id;
            transaction.AddCondition(Condition.HashEqual(key, blobName, chunk));
            _ = transaction.HashDeleteAsync(key, blobName, CommandFlags.FireAndForget);
            _ = transaction.ExecuteAsync(CommandFlags.FireAndForget);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            Warn($"Redis update failed ({e.GetType().Name}); a stale entry is re-checked by whoever finds it");
        }
    }

    private async Task RepublishAsync()
    {
        try
        {
            var batch = Db.CreateBatch();
            var pending = _local.All.Select(kv => batch.HashSetAsync(_prefix + "chunk:" + kv.Key, kv.Value.BlobName, kv.Value.Chunk)).ToList();
            batch.Execute();
            await Task.WhenAll(pending).ConfigureAwait(false);
            _logger.LogInformation("Redis {Endpoint} is back: republished {Count} chunk location(s)", _endpoint, pending.Count);
            Interlocked.Exchange(ref _warned, 0);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            _logger.LogDebug("republishing to Redis failed: {Error}", e.Message);
        }
    }

    public async ValueTask<bool> TryLeaseAsync(string key, TimeSpan ttl) =>
        await _leases.TryTakeAsync(_prefix + "lease:" + key, ttl,
            e => Warn($"Redis lease failed ({e.GetType().Name}); fetching without cross-process single flight")).ConfigureAwait(false);

    /// <summary>Leases are taken for seconds (the fetcher's lease time is 30 s); anything longer-lived was not set by mlfs.</summary>
    private static readonly TimeSpan MaxBelievableLease = TimeSpan.FromMinutes(2);

    public void ReleaseLease(string key) => _leases.Release(_prefix + "lease:" + key);

    public string Describe() => $"redis {_endpoint} ({(_redis.IsConnected ? "connected" : "disconnected")})";

    /// <summary>Number of chunk keys this cache directory has in Redis (for tests and status).</summary>
    public async Task<long> CountChunkKeysAsync()
    {
        long count = 0;
        foreach (var endpoint in _redis.GetEndPoints())
            await foreach (var _ in _redis.GetServer(endpoint).KeysAsync(pattern: _prefix + "chunk:*").ConfigureAwait(false)) count++;
        return count;
    }

    public void Dispose()
    {
        _redis.Dispose();
        _local.Dispose();
    }
}
