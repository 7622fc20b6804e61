using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;

namespace MlArtifactFs.Fleet;

/// <summary>
/// Serves this node's verified chunks to the fleet, and nothing else of its disk: HTTP/1.1,
/// <c>GET /v1/chunks/ALGORITHM/HEX</c> (<c>sha256</c> or <c>blake3</c>, 64 lowercase hex digits; a bare
/// <c>/v1/chunks/HEX</c>, as nodes before BLAKE3 asked, means SHA-256), <c>Range: bytes=a-b</c> within the chunk,
/// <c>Authorization: Bearer TOKEN</c> on every request (401 and no bytes without it). Any other path
/// is 404, a malformed id 400, any other method 405.
/// <para>
/// Only chunks in <see cref="HeldChunks"/> are served: ones this process verified and stored, or
/// adopted after hashing them. Each is read from the cache file and hashed against its id (with the
/// id's algorithm) before a byte goes out, so a chunk damaged on disk, or one being rewritten, is a 404,
/// never wrong bytes. (That re-hash is why the body is not sendfile'd: serving costs one hash per chunk.)
/// </para>
/// </summary>
public sealed class PeerServer : IAsyncDisposable
{
    private const int MaxHeaderBytes = 8 << 10;
    private const int MaxConnections = 64;
    private static readonly TimeSpan HeaderTimeout = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(60);

    private readonly TcpListener _listener;
    private readonly byte[] _tokenHash;
    private readonly HeldChunks _held;
    private readonly BlobCache _cache;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _connections = new(MaxConnections);
    private readonly SemaphoreSlim _serving = new(Math.Max(2, Environment.ProcessorCount)); // chunk buffers in memory at once
    private readonly Task _accepting;

    public long ChunksServed, BytesServed, Unauthorized, BadRequests, NotFound;

    public PeerServer(IPEndPoint listen, string token, HeldChunks held, BlobCache cache, ILogger logger)
    {
        _tokenHash = SHA256.HashData(Encoding.UTF8.GetBytes(token));
        _held = held;
        _cache = cache;
        _logger = logger;
        _listener = new TcpListener(listen);
        try { _listener.Start(128); }
        catch (SocketException e)
        {
            throw new IOException($"--peer-listen {listen}: cannot listen there ({e.SocketErrorCode}: {e.Message})", e);
        }
        EndPoint = (IPEndPoint)_listener.LocalEndpoint;
        _accepting = AcceptLoopAsync();
    }

    /// <summary>Where it actually listens (the port, when 0 was asked for).</summary>
    public IPEndPoint EndPoint { get; }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await _listener.AcceptSocketAsync(_stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { return; }
            catch (SocketException e) when (!_stop.IsCancellationRequested)
            {
                _logger.LogDebug("peer server: accept failed: {Error}", e.Message);
                continue;
            }
            catch (ObjectDisposedException) { return; }
            if (!_connections.Wait(0))
            {
                socket.Dispose(); // over the limit: the peer falls back to another holder or storage
                continue;
            }
            _ = Task.Run(async () =>
            {
                try { await ServeConnectionAsync(socket).ConfigureAwait(false); }
                catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException) { }
                catch (Exception e) { _logger.LogWarning("peer server: connection failed: {Error}", e.Message); }
                finally
                {
                    socket.Dispose();
                    _connections.Release();
                }
            });
        }
    }

    private async Task ServeConnectionAsync(Socket socket)
    {
        socket.NoDelay = true;
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var header = new byte[MaxHeaderBytes];
        int buffered = 0;
        bool first = true;
        while (!_stop.IsCancellationRequested)
        {
            // One request head, within a time bound (a slow or silent client does not hold a slot forever).
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(first ? HeaderTimeout : IdleTimeout);
            int end;
            while ((end = HeadEnd(header.AsSpan(0, buffered))) < 0)
            {
                if (buffered == header.Length)
                {
                    await WriteStatusAsync(stream, 431, "Request Header Fields Too Large", close: true).ConfigureAwait(false);
                    Interlocked.Increment(ref BadRequests);
                    return;
                }
                int n = await stream.ReadAsync(header.AsMemory(buffered), timeout.Token).ConfigureAwait(false);
                if (n == 0) return;
                buffered += n;
            }
            first = false;
            var request = ParseHead(Encoding.ASCII.GetString(header, 0, end));
            // Requests have no body here: whatever follows the head is the next request.
            Buffer.BlockCopy(header, end + 4, header, 0, buffered - end - 4);
            buffered -= end + 4;
            bool keepAlive = await AnswerAsync(stream, request).ConfigureAwait(false);
            if (!keepAlive) return;
        }
    }

    private static int HeadEnd(ReadOnlySpan<byte> bytes) => bytes.IndexOf("\r\n\r\n"u8);

    private sealed record Request(string Method, string Target, string Version, Dictionary<string, string> Headers, bool Malformed);

    private static Request ParseHead(string head)
    {
        var lines = head.Split("\r\n");
        var parts = lines[0].Split(' ');
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        bool malformed = parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal);
        foreach (var line in lines.Skip(1))
        {
            int colon = line.IndexOf(':');
            if (colon <= 0) { malformed = true; continue; }
            headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        return malformed ? new Request("", "", "", headers, true) : new Request(parts[0], parts[1], parts[2], headers, false);
    }

    /// <summary>Answers one request; false when the connection should close.</summary>
    private async Task<bool> AnswerAsync(NetworkStream stream, Request request)
    {
        if (request.Malformed)
        {
            Interlocked.Increment(ref BadRequests);
            await WriteStatusAsync(stream, 400, "Bad Request", close: true).ConfigureAwait(false);
            return false;
        }
        bool keepAlive = !(request.Headers.TryGetValue("Connection", out var connection) && connection.Equals("close", StringComparison.OrdinalIgnoreCase))
                         && request.Version == "HTTP/1.1";
        // Who may ask comes first: without the token, nothing is said about what this node holds.
        if (!Authorized(request.Headers.GetValueOrDefault("Authorization")))
        {
            Interlocked.Increment(ref Unauthorized);
            await WriteStatusAsync(stream, 401, "Unauthorized", close: !keepAlive, extra: "WWW-Authenticate: Bearer\r\n").ConfigureAwait(false);
            return keepAlive;
        }
        if (request.Method != "GET")
        {
            Interlocked.Increment(ref BadRequests);
            await WriteStatusAsync(stream, 405, "Method Not Allowed", close: !keepAlive, extra: "Allow: GET\r\n").ConfigureAwait(false);
            return keepAlive;
        }
        const string prefix = "/v1/chunks/";
        if (!request.Target.StartsWith(prefix, StringComparison.Ordinal))
        {
            Interlocked.Increment(ref NotFound);
            await WriteStatusAsync(stream, 404, "Not Found", close: !keepAlive).ConfigureAwait(false);
            return keepAlive;
        }
        if (!TryParseChunkPath(request.Target[prefix.Length..], out var id))
        {
            Interlocked.Increment(ref BadRequests);
            await WriteStatusAsync(stream, 400, "Bad Request", close: !keepAlive).ConfigureAwait(false);
            return keepAlive;
        }
        if (!_held.TryGet(id, out var held))
        {
            Interlocked.Increment(ref NotFound);
            await WriteStatusAsync(stream, 404, "Not Found", close: !keepAlive).ConfigureAwait(false);
            return keepAlive;
        }

        long from = 0, to = held.Length - 1;
        bool partial = false;
        if (request.Headers.TryGetValue("Range", out var range))
        {
            if (!TryParseRange(range, held.Length, out from, out to))
            {
                Interlocked.Increment(ref BadRequests);
                await WriteStatusAsync(stream, 416, "Range Not Satisfiable", close: !keepAlive, extra: $"Content-Range: bytes */{held.Length}\r\n").ConfigureAwait(false);
                return keepAlive;
            }
            partial = true;
        }

        await _serving.WaitAsync(_stop.Token).ConfigureAwait(false);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(held.Length);
        try
        {
            var bytes = buffer.AsMemory(0, held.Length);
            // Read it back and hash it against its id: bytes that do not match are never sent.
            if (!_cache.TryReadIndexedChunk(held.BlobName, held.Chunk, bytes) || !HashMatches(bytes.Span, id))
            {
                _held.Forget(id);
                Interlocked.Increment(ref NotFound);
                await WriteStatusAsync(stream, 404, "Not Found", close: !keepAlive).ConfigureAwait(false);
                return keepAlive;
            }
            long length = to - from + 1;
            string head = (partial ? "HTTP/1.1 206 Partial Content\r\n" : "HTTP/1.1 200 OK\r\n")
                          + $"Content-Length: {length}\r\nContent-Type: application/octet-stream\r\n"
                          + (partial ? $"Content-Range: bytes {from}-{to}/{held.Length}\r\n" : "")
                          + (keepAlive ? "" : "Connection: close\r\n") + "\r\n";
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head), _stop.Token).ConfigureAwait(false);
            await stream.WriteAsync(bytes.Slice((int)from, (int)length), _stop.Token).ConfigureAwait(false);
            Interlocked.Increment(ref ChunksServed);
            Interlocked.Add(ref BytesServed, length);
            return keepAlive;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
            _serving.Release();
        }
    }

    private bool Authorized(string? authorization)
    {
        if (authorization is null || !authorization.StartsWith("Bearer ", StringComparison.Ordinal)) return false;
        var given = SHA256.HashData(Encoding.UTF8.GetBytes(authorization["Bearer ".Length..]));
        return CryptographicOperations.FixedTimeEquals(given, _tokenHash);
    }

    /// <summary>A bare SHA-256 id (64 lowercase hex digits), the form of the protocol before BLAKE3.</summary>
    public static bool IsChunkId(string id) => ChunkHashing.IsDigestHex(id);

    /// <summary><c>sha256/HEX</c>, <c>blake3/HEX</c>, or a bare <c>HEX</c> (SHA-256); false for anything else.</summary>
    public static bool TryParseChunkPath(string path, out ChunkId id)
    {
        id = default;
        int slash = path.IndexOf('/');
        if (slash < 0)
        {
            if (!IsChunkId(path)) return false;
            id = new ChunkId(ChunkHashAlgorithm.Sha256, path);
            return true;
        }
        return ChunkId.TryParse($"{path[..slash]}:{path[(slash + 1)..]}", out id);
    }

    private static bool HashMatches(ReadOnlySpan<byte> bytes, ChunkId id)
    {
        Span<byte> hash = stackalloc byte[ChunkHashing.DigestSize];
        ChunkHashing.Compute(id.Algorithm, bytes, hash);
        return Convert.ToHexStringLower(hash) == id.Hex;
    }

    /// <summary>One range "bytes=a-b", "bytes=a-" or "bytes=-n" inside [0, length).</summary>
    public static bool TryParseRange(string header, long length, out long from, out long to)
    {
        from = to = 0;
        if (!header.StartsWith("bytes=", StringComparison.Ordinal) || header.Contains(',')) return false;
        var spec = header["bytes=".Length..].Split('-');
        if (spec.Length != 2) return false;
        var ci = System.Globalization.CultureInfo.InvariantCulture;
        if (spec[0].Length == 0)
        {
            if (!long.TryParse(spec[1], System.Globalization.NumberStyles.None, ci, out long suffix) || suffix == 0) return false;
            from = Math.Max(0, length - suffix);
            to = length - 1;
            return true;
        }
        if (!long.TryParse(spec[0], System.Globalization.NumberStyles.None, ci, out from) || from >= length) return false;
        if (spec[1].Length == 0) { to = length - 1; return true; }
        if (!long.TryParse(spec[1], System.Globalization.NumberStyles.None, ci, out to) || to < from) return false;
        to = Math.Min(to, length - 1);
        return true;
    }

    private async Task WriteStatusAsync(NetworkStream stream, int status, string reason, bool close, string extra = "")
    {
        string head = $"HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n{extra}{(close ? "Connection: close\r\n" : "")}\r\n";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(head), _stop.Token).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        try { await _accepting.ConfigureAwait(false); } catch (Exception) { }
        _stop.Dispose();
    }
}

/// <summary>A chunk this node holds verified: where it is in the cache.</summary>
public readonly record struct HeldChunk(string BlobName, int Chunk, int Length);

/// <summary>
/// The chunks this node may serve and announces: added only after a chunk was verified and stored
/// (or adopted after hashing), forgotten when it turns out gone or damaged.
/// </summary>
public sealed class HeldChunks
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<ChunkId, HeldChunk> _chunks = new();

    public event Action<ChunkId>? Forgotten;

    public int Count => _chunks.Count;

    /// <summary>True when the chunk was not held before (so it is news for the index).</summary>
    public bool Add(ChunkId id, HeldChunk chunk) => _chunks.TryAdd(id, chunk);

    public bool TryGet(ChunkId id, out HeldChunk chunk) => _chunks.TryGetValue(id, out chunk);

    public void Forget(ChunkId id)
    {
        if (_chunks.TryRemove(id, out _)) Forgotten?.Invoke(id);
    }

    public IReadOnlyCollection<ChunkId> Ids => [.. _chunks.Keys];

    public IEnumerable<KeyValuePair<ChunkId, HeldChunk>> All => _chunks;
}
