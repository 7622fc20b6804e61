using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace MlArtifactFs.Index;

/// <summary>
/// Fetch leases in Redis, one key each (SET NX PX, value = the owner; released by compare-and-delete).
/// A lease that Redis cannot answer for is granted (fetching without single flight is slower, never
/// wrong). A lease held by someone is believed only if it will expire the way ours do: one without a
/// TTL, or with one beyond <paramref name="maxBelievable"/>, was not set by mlfs and is ignored
/// (counted), so no planted key can stall a fetch.
/// </summary>
internal sealed class RedisLeases(ConnectionMultiplexer redis, RedisOwnerBreaker breaker, string owner, TimeSpan maxBelievable, ILogger logger)
{
    private const string ReleaseScript = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";
    private long _ignored;

    /// <summary>Leases found held without a believable TTL, and ignored.</summary>
    public long Ignored => Interlocked.Read(ref _ignored);

    /// <summary>True when the caller should fetch: it took the lease, Redis could not say, or the holder's lease is not believable.</summary>
    public async Task<bool> TryTakeAsync(string key, TimeSpan ttl, Action<Exception> failed)
    {
        if (!redis.IsConnected || !breaker.Allows(key)) return true;
        try
        {
            var db = redis.GetDatabase();
            if (await db.StringSetAsync(key, owner, ttl, When.NotExists).ConfigureAwait(false)) return true;
            var remaining = await db.KeyTimeToLiveAsync(key).ConfigureAwait(false);
            if (remaining is null || remaining > maxBelievable)
            {
                Interlocked.Increment(ref _ignored);
                logger.LogDebug("lease {Key} has {Ttl}: ignored, fetching without it", key, remaining is null ? "no TTL" : $"a TTL of {remaining}");
                return true;
            }
            return false;
        }
        catch (Exception e) when (e is RedisException or TimeoutException)
        {
            breaker.Failed(key);
            failed(e);
            return true;
        }
    }

    public void Release(string key)
    {
        if (!redis.IsConnected) return;
        try { redis.GetDatabase().ScriptEvaluate(ReleaseScript, [(RedisKey)key], [(RedisValue)owner], CommandFlags.FireAndForget); }
        catch (Exception e) when (e is RedisException or TimeoutException) { }
    }
}
