using System.Collections.Concurrent;
using System.Net;
using StackExchange.Redis;

namespace MlArtifactFs.Index;

/// <summary>
/// Skips Redis commands for keys whose server is down, instead of letting each wait out the timeout:
/// on Redis Cluster a dead master takes its slots with it, and every chunk's key there would otherwise
/// cost a timeout. A key's owner comes from the cluster map the client holds (GetServer(key) is no
/// help: with the owner gone it names another master). The owner is skipped while the client sees it
/// disconnected, and for a while after a command to it failed; keys on live masters go on as usual.
/// On a single Redis there is one owner, and so one outage.
/// </summary>
internal sealed class RedisOwnerBreaker(ConnectionMultiplexer redis, TimeSpan openFor)
{
    private static readonly EndPoint Single = new DnsEndPoint("redis", 0);
    private readonly ConcurrentDictionary<EndPoint, long> _openUntil = new();

    /// <summary>False while the key's server is skipped.</summary>
    public bool Allows(RedisKey key)
    {
        var owner = OwnerOf(key);
        if (!ReferenceEquals(owner, Single) && !IsConnected(owner)) return false;
        return !_openUntil.TryGetValue(owner, out long until) || Environment.TickCount64 >= until;
    }

    public void Failed(RedisKey key) => _openUntil[OwnerOf(key)] = Environment.TickCount64 + (long)openFor.TotalMilliseconds;

    private bool IsConnected(EndPoint owner)
    {
        try { return redis.GetServer(owner).IsConnected; }
        catch (Exception e) when (e is ArgumentException or RedisException or InvalidOperationException) { return true; } // unknown to the client: let the command say
    }

    private EndPoint OwnerOf(RedisKey key)
    {
        try
        {
            int slot = redis.HashSlot(key);
            foreach (var endpoint in redis.GetEndPoints())
                if (redis.GetServer(endpoint).ClusterConfiguration?.GetBySlot(slot) is { EndPoint: { } owner }) return owner;
        }
        catch (Exception e) when (e is RedisException or InvalidOperationException or NotSupportedException) { }
        return Single;
    }
}
