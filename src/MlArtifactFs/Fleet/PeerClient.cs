using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fleet;

/// <summary>What one peer gave this node, and how often it failed.</summary>
public sealed class PeerCounters
{
    public long Chunks, Bytes, Failures;
}

/// <summary>
/// Gets chunks from peers: one GET per chunk into memory, with the fleet token, a connect and stall
/// bound, and no redirect. It returns bytes; whether they are the chunk is decided by the caller,
/// which hashes them against the reading manifest. A peer that fails (refused, stalled, short body,
/// wrong status, or bytes the caller found wrong) is skipped for a while and counted.
/// </summary>
public sealed class PeerClient : IDisposable
{
    private readonly HttpClient _http;
    private readonly FleetOptions _options;
    private readonly ConcurrentDictionary<string, DateTime> _skipUntil = new(StringComparer.Ordinal);

    public ConcurrentDictionary<string, PeerCounters> Peers { get; } = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> _inFlight = new(StringComparer.Ordinal);

    /// <summary>GETs this node has open to <paramref name="peer"/> now (to choose the least loaded holder).</summary>
    public int InFlight(IPEndPoint peer) => _inFlight.TryGetValue(peer.ToString(), out int n) ? n : 0;

    public PeerClient(FleetOptions options)
    {
        _options = options;
        var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false, // peers are on the fleet's own network
            ConnectTimeout = TimeSpan.FromSeconds(2),
            MaxConnectionsPerServer = 8,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
            // Peer addresses come from Redis (input): IP literals only, never link-local or metadata ones.
            ConnectCallback = (context, cancel) => HostPolicy.ConnectAsync(context, literalOnly: true, cancel),
        };
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan, DefaultRequestVersion = HttpVersion.Version11 };
    }

    public bool IsSkipped(IPEndPoint peer) =>
        _skipUntil.TryGetValue(peer.ToString(), out var until) && DateTime.UtcNow < until;

    /// <summary>Counts a failure of this peer and skips it for the penalty time.</summary>
    public void Penalize(IPEndPoint peer)
    {
        string key = peer.ToString();
        _skipUntil[key] = DateTime.UtcNow + _options.Penalty;
        Interlocked.Increment(ref Peers.GetOrAdd(key, _ => new PeerCounters()).Failures);
    }

    public void Credit(IPEndPoint peer, int bytes)
    {
        var counters = Peers.GetOrAdd(peer.ToString(), _ => new PeerCounters());
        Interlocked.Increment(ref counters.Chunks);
        Interlocked.Add(ref counters.Bytes, bytes);
    }

    /// <summary>
    /// GETs chunk <paramref name="id"/> from <paramref name="peer"/> into <paramref name="destination"/>
    /// (its exact length). Null on success, else why it failed; NotHeld when the peer simply does not
    /// have it (a 404: a stale index entry, not misbehaviour), otherwise the caller penalizes it.
    /// </summary>
    public async Task<(string? Failure, bool NotHeld)> TryGetAsync(IPEndPoint peer, ChunkId id, Memory<byte> destination, string fileName, CancellationToken cancel)
    {
        using var get = MlfsTelemetry.StartDetached("mlfs.get", Activity.Current?.Context ?? default);
        get?.SetTag("mlfs.source", "peer");
        get?.SetTag("server.address", peer.Address.ToString());
        get?.SetTag("server.port", peer.Port);
        get?.SetTag("mlfs.file", fileName);
        get?.SetTag("mlfs.chunk.id", id.ToString());
        get?.SetTag("mlfs.attempt", 1);
        using var stall = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        int got = 0;
        string key = peer.ToString();
        _inFlight.AddOrUpdate(key, 1, (_, n) => n + 1);
        try
        {
            stall.CancelAfter(_options.PeerTimeout);
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{peer}/v1/chunks/{ChunkHashing.Name(id.Algorithm)}/{id.Hex}");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _options.Token);
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, stall.Token).ConfigureAwait(false);
            get?.SetTag("http.response.status_code", (int)response.StatusCode);
            if (response.StatusCode == HttpStatusCode.NotFound) return (End("not held (404)").Item1, true);
            if (response.StatusCode != HttpStatusCode.OK)
                return End($"HTTP {(int)response.StatusCode}");
            if (response.Content.Headers.ContentLength is { } length && length != destination.Length)
                return End($"{length} bytes offered for a {destination.Length}-byte chunk");
            await using var body = await response.Content.ReadAsStreamAsync(stall.Token).ConfigureAwait(false);
            while (got < destination.Length)
            {
                stall.CancelAfter(_options.PeerTimeout);
                int n = await body.ReadAsync(destination[got..], stall.Token).ConfigureAwait(false);
                if (n == 0) return End($"body ended after {got} of {destination.Length} bytes");
                got += n;
            }
            return End(null);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            return End($"no data for {_options.PeerTimeout.TotalSeconds:0.#} s (stalled)");
        }
        catch (Exception e) when (e is HttpRequestException or IOException or SocketException)
        {
            return End($"connection error ({e.Message})");
        }
        finally
        {
            _inFlight.AddOrUpdate(key, 0, (_, n) => n - 1);
        }

        (string?, bool) End(string? error)
        {
            get?.SetTag("mlfs.bytes", (long)got);
            if (error is not null) get?.SetStatus(ActivityStatusCode.Error, error);
            return (error, false);
        }
    }

    public void Dispose() => _http.Dispose();
}
