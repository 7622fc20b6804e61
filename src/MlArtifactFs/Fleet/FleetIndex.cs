using System.Net;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Index;
using MlArtifactFs.Storage;
using StackExchange.Redis;

namespace MlArtifactFs.Fleet;

/// <summary>
/// The fleet's chunk -> holders index and its per-chunk single flight, in Redis. Every key is one
/// chunk's and carries the chunk's id as its hash tag, so all of a chunk's keys sit in one slot
/// and each command touches one key: it works the same on a single Redis and on Redis Cluster.
/// <list type="bullet">
/// <item><c>mlfs:fleet:NS:{ID}:holders</c> (ID = <c>sha256:HEX</c> or <c>blake3:HEX</c>, see <see cref="ChunkId"/>): sorted set, member = a holder's "ip:port", score = when
/// the entry expires (ms since the epoch). Holders refresh their entries; a dead node's lapse. The
/// key itself expires too, so nothing is left behind once every holder is gone.</item>
/// <item><c>mlfs:fleet:NS:{ID}:lease</c>: SET NX PX, value = the node fetching it from storage.</item>
/// </list>
/// NS is a hash of the fleet token, so fleets sharing a Redis do not see each other. Entries are
/// input: a member that is not an IP:port, or names an address we never connect to (link-local,
/// metadata), is ignored and counted. Redis down means no sharing, never a failed read: lookups find
/// nobody and leases are granted.
/// </summary>
public sealed class FleetIndex
{
    private readonly ConnectionMultiplexer _redis;
    private readonly string _prefix;
    private readonly string _self;
    private readonly TimeSpan _ttl;
    private readonly ILogger _logger;
    private readonly RedisOwnerBreaker _breaker;
    private readonly RedisLeases _leases;
    private long _ignored;
    private int _warned;

    /// <summary>On <paramref name="redis"/>, the connection the cache's chunk index already holds (not owned: its owner closes it).</summary>
    public FleetIndex(ConnectionMultiplexer redis, string token, IPEndPoint self, TimeSpan ttl, TimeSpan leaseTime, ILogger logger)
        : this(redis, token, self.ToString(), ttl, leaseTime, logger) { }

    private FleetIndex(ConnectionMultiplexer redis, string token, string self, TimeSpan ttl, TimeSpan leaseTime, ILogger logger)
    {
        _redis = redis;
        _self = self;
        _ttl = ttl;
        _logger = logger;
        _breaker = new RedisOwnerBreaker(redis, TimeSpan.FromSeconds(10));
        _leases = new RedisLeases(redis, _breaker, self, leaseTime * 2, logger);
        _prefix = "mlfs:fleet:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes("mlfs-fleet:" + token)))[..16] + ":";
    }

    /// <summary>Holder entries that were not usable addresses, and leases without a believable TTL (planted or damaged), ignored.</summary>
    public long IgnoredEntries => Interlocked.Read(ref _ignored) + _leases.Ignored;

    public bool IsConnected => _redis.IsConnected;

    private IDatabase Db => _redis.GetDatabase();
    private string HoldersKey(ChunkId id) => $"{_prefix}{{{id}}}:holders";
    private string LeaseKey(ChunkId id) => $"{_prefix}{{{id}}}:lease";

    /// <summary>Live holders of a chunk other than this node (may be stale: whatever they send is verified).</summary>
    public async Task<IReadOnlyList<IPEndPoint>> HoldersAsync(ChunkId id)
    {
        string key = HoldersKey(id);
        if (!_redis.IsConnected || !_breaker.Allows(key)) return [];
        try
        {
            var members = await Db.SortedSetRangeByScoreAsync(key, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), double.PositiveInfinity, take: 32)
                .ConfigureAwait(false);
            var holders = new List<IPEndPoint>(members.Length);
            foreach (var member in members)
            {
                string text = member.ToString();
                if (text == _self) continue;
                if (text.Length > 64 || !IPEndPoint.TryParse(text, out var endpoint) || endpoint.Port == 0 || HostPolicy.Refuses(endpoint.Address) is not null)
                {
                    Interlocked.Increment(ref _ignored);
                    continue;
                }
                holders.Add(endpoint);
            }
            return holders;
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            _breaker.Failed(key);
            Warn($"fleet index lookup failed ({e.GetType().Name}); fetching from storage");
            return [];
        }
    }

    /// <summary>Says (or says again) that this node holds these verified chunks.</summary>
    public async Task AnnounceAsync(IReadOnlyCollection<ChunkId> ids)
    {
        if (!_redis.IsConnected || ids.Count == 0) return;
        try
        {
            double expires = DateTimeOffset.UtcNow.Add(_ttl).ToUnixTimeMilliseconds();
            var batch = Db.CreateBatch();
            var sent = new List<Task>(ids.Count * 3);
            foreach (var id in ids)
            {
                string key = HoldersKey(id);
                if (!_breaker.Allows(key)) continue; // announced again on the next refresh
                sent.Add(batch.SortedSetAddAsync(key, _self, expires));
                sent.Add(batch.SortedSetRemoveRangeByScoreAsync(key, double.NegativeInfinity, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds())); // lapsed holders
                sent.Add(batch.KeyExpireAsync(key, _ttl * 2));
            }
            batch.Execute();
            await Task.WhenAll(sent).ConfigureAwait(false);
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            Warn($"fleet index update failed ({e.GetType().Name}); announced again on the next refresh");
        }
    }

    /// <summary>This node no longer holds these chunks (evicted, damaged, or the node is leaving).</summary>
    public Task WithdrawAsync(IReadOnlyCollection<ChunkId> ids)
    {
        if (!_redis.IsConnected || ids.Count == 0) return Task.CompletedTask;
        try
        {
            var batch = Db.CreateBatch();
            var sent = ids.Select(id => (Task)batch.SortedSetRemoveAsync(HoldersKey(id), _self)).ToList();
            batch.Execute();
            return Task.WhenAll(sent).ContinueWith(t => _ = t.Exception, TaskScheduler.Default); // best effort: entries lapse anyway
        }
        catch (Exception e) when (e is RedisException or TimeoutException) { return Task.CompletedTask; }
    }

    /// <summary>True when this node should fetch the chunk from storage for the fleet (also when Redis cannot say).</summary>
    public Task<bool> TryLeaseAsync(ChunkId id, TimeSpan ttl) =>
        _leases.TryTakeAsync(LeaseKey(id), ttl, e => Warn($"fleet lease failed ({e.GetType().Name}); fetching from storage"));

    public void ReleaseLease(ChunkId id) => _leases.Release(LeaseKey(id));

    public string Describe() => $"redis {string.Join(",", _redis.GetEndPoints().Select(e => e.ToString()))} ({(_redis.IsConnected ? "connected" : "disconnected")})";

    private void Warn(string message)
    {
        if (Interlocked.Exchange(ref _warned, 1) == 0) _logger.LogWarning("{Message}", message);
        else _logger.LogDebug("{Message}", message);
    }

}
