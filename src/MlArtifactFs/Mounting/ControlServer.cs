using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Mounting;

public sealed record MountStatus
{
    [JsonPropertyName("mount_point")] public string MountPoint { get; init; } = "";
    [JsonPropertyName("artifact_id")] public string ArtifactId { get; init; } = "";
    [JsonPropertyName("version")] public string Version { get; init; } = "";
    [JsonPropertyName("files")] public int Files { get; init; }
    [JsonPropertyName("total_bytes")] public long TotalBytes { get; init; }
    [JsonPropertyName("cache_dir")] public string CacheDirectory { get; init; } = "";
    [JsonPropertyName("cache_blobs")] public int CacheBlobs { get; init; }
    [JsonPropertyName("cache_bytes")] public long CacheBytes { get; init; }
    [JsonPropertyName("cache_capacity")] public long CacheCapacity { get; init; }
    [JsonPropertyName("chunks_fetched")] public long ChunksFetched { get; init; }
    [JsonPropertyName("bytes_fetched")] public long BytesFetched { get; init; }
    [JsonPropertyName("requests")] public long Requests { get; init; }
    [JsonPropertyName("retries")] public long Retries { get; init; }
    [JsonPropertyName("fetch_failures")] public long FetchFailures { get; init; }
    [JsonPropertyName("cache_hits")] public long CacheHits { get; init; }
    [JsonPropertyName("cache_misses")] public long CacheMisses { get; init; }
    [JsonPropertyName("hit_ratio")] public double HitRatio { get; init; }
    [JsonPropertyName("unverified_bytes_served")] public long UnverifiedBytesServed { get; init; }
    [JsonPropertyName("open_files")] public int OpenFiles { get; init; }
    [JsonPropertyName("passthrough_opens")] public long PassthroughOpens { get; init; }
    [JsonPropertyName("passthrough")] public bool Passthrough { get; init; }
    /// <summary>READs of complete files answered by splicing from the cache file into /dev/fuse (no passthrough).</summary>
    [JsonPropertyName("spliced_reads")] public long SplicedReads { get; init; }
    [JsonPropertyName("chunks_deduplicated")] public long ChunksDeduplicated { get; init; }
    [JsonPropertyName("bytes_deduplicated")] public long BytesDeduplicated { get; init; }
    [JsonPropertyName("chunks_from_other_processes")] public long ChunksFromOtherProcesses { get; init; }
    [JsonPropertyName("chunk_index")] public string ChunkIndex { get; init; } = "";
    /// <summary>Index entries (Redis or in-process) that named nothing usable and were ignored: input, never trusted.</summary>
    [JsonPropertyName("ignored_index_entries")] public long IgnoredIndexEntries { get; init; }
    /// <summary>Recorded chunks found damaged (or forged) in the cache, dropped and fetched again.</summary>
    [JsonPropertyName("damaged_chunks_dropped")] public long DamagedChunksDropped { get; init; }
    // Fleet mode (bytes_fetched above counts storage only)
    [JsonPropertyName("bytes_from_peers")] public long BytesFromPeers { get; init; }
    [JsonPropertyName("chunks_from_peers")] public long ChunksFromPeers { get; init; }
    [JsonPropertyName("peer_failures")] public long PeerFailures { get; init; }
    [JsonPropertyName("fleet_waits")] public long FleetWaits { get; init; }
    [JsonPropertyName("fleet_hedges")] public long FleetHedges { get; init; }
    [JsonPropertyName("fleet")] public FleetStatus? Fleet { get; init; }
}

public sealed record ControlRequest
{
    [JsonPropertyName("command")] public string Command { get; init; } = "";
    [JsonPropertyName("manifest")] public string? Manifest { get; init; }
}

public sealed record ControlResponse
{
    [JsonPropertyName("ok")] public bool Ok { get; init; }
    [JsonPropertyName("error")] public string? Error { get; init; }
    [JsonPropertyName("status")] public MountStatus? Status { get; init; }
    [JsonPropertyName("switch_ms")] public double? SwitchMilliseconds { get; init; }
    [JsonPropertyName("bytes_fetched")] public long? BytesFetched { get; init; }
}

public sealed record FleetStatus
{
    [JsonPropertyName("listen")] public string Listen { get; init; } = "";
    [JsonPropertyName("advertise")] public string Advertise { get; init; } = "";
    [JsonPropertyName("index")] public string Index { get; init; } = "";
    [JsonPropertyName("chunks_held")] public int ChunksHeld { get; init; }
    [JsonPropertyName("chunks_served")] public long ChunksServed { get; init; }
    [JsonPropertyName("bytes_served")] public long BytesServed { get; init; }
    [JsonPropertyName("unauthorized_requests")] public long Unauthorized { get; init; }
    [JsonPropertyName("ignored_holder_entries")] public long IgnoredHolderEntries { get; init; }
    [JsonPropertyName("peers")] public Dictionary<string, PeerStatus> Peers { get; init; } = [];
}

public sealed record PeerStatus
{
    [JsonPropertyName("chunks")] public long Chunks { get; init; }
    [JsonPropertyName("bytes")] public long Bytes { get; init; }
    [JsonPropertyName("failures")] public long Failures { get; init; }
}

[JsonSourceGenerationOptions(WriteIndented = false)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
[JsonSerializable(typeof(MountStatus))]
public sealed partial class ControlJsonContext : JsonSerializerContext;

/// <summary>
/// The running mount's control socket (Unix domain, 0600 in a 0700 directory): one JSON request
/// line, one JSON response line. Serves `mlfs status` and `mlfs switch`.
/// </summary>
public sealed class ControlServer : IDisposable
{
    private readonly Socket _listener;
    private readonly ModelMount _mount;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stop = new();

    private ControlServer(Socket listener, string path, ModelMount mount, ILogger logger)
    {
        _listener = listener;
        SocketPath = path;
        _mount = mount;
        _logger = logger;
        _ = AcceptLoopAsync();
    }

    public string SocketPath { get; }

    /// <summary>/run/mlfs (root) or $XDG_RUNTIME_DIR/mlfs, one socket per mount point (named by a hash of its path).</summary>
    public static string DefaultPath(string mountPoint)
    {
        string full = Path.GetFullPath(mountPoint).TrimEnd('/');
        string name = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(full)))[..16] + ".sock";
        string dir = Libc.GetUid() == 0
            ? "/run/mlfs"
            : Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg ? Path.Combine(xdg, "mlfs") : $"/tmp/mlfs-{Libc.GetUid()}";
        return Path.Combine(dir, name);
    }

    public static ControlServer? TryStart(string path, ModelMount mount, ILogger logger)
    {
        try
        {
            // Ours and private, or not at all: another user who made the directory first could answer in our place.
            Cache.CacheFiles.EnsurePrivateDirectory(Path.GetDirectoryName(path)!);
            if (File.Exists(path)) File.Delete(path); // left by a crashed mount (the mount point was free, so it is stale)
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            socket.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(8);
            return new ControlServer(socket, path, mount, logger);
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException)
        {
            logger.LogWarning("control socket {Path} unavailable ({Error}); `mlfs status` and `mlfs switch` will not reach this mount", path, e.Message);
            return null;
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false); }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException) { return; }
            _ = HandleAsync(client);
        }
    }

    private async Task HandleAsync(Socket client)
    {
        using (client)
        await using (var stream = new NetworkStream(client))
        {
            ControlResponse response;
            try
            {
                using var reader = new StreamReader(stream, leaveOpen: true);
                string? line = await reader.ReadLineAsync(_stop.Token).ConfigureAwait(false);
                var request = line is null ? null : JsonSerializer.Deserialize(line, ControlJsonContext.Default.ControlRequest);
                response = request?.Command switch
                {
                    "status" => new ControlResponse { Ok = true, Status = _mount.GetStatus() },
                    "switch" when request.Manifest is { } manifest => await SwitchAsync(manifest).ConfigureAwait(false),
                    _ => new ControlResponse { Ok = false, Error = $"unknown command \"{request?.Command}\"" },
                };
            }
            catch (Exception e)
            {
                // Whatever went wrong goes back to the client by name: it must never look like "no mount answers".
                _logger.LogError("control request failed: {Type}: {Error}", e.GetType().Name, e.Message);
                response = new ControlResponse { Ok = false, Error = $"{e.GetType().Name}: {e.Message}" };
            }
            try
            {
                byte[] bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(response, ControlJsonContext.Default.ControlResponse) + "\n");
                await stream.WriteAsync(bytes, _stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or OperationCanceledException or SocketException) { }
        }
    }

    private async Task<ControlResponse> SwitchAsync(string manifest)
    {
        try
        {
            var result = await _mount.SwitchAsync(manifest, _stop.Token).ConfigureAwait(false);
            return new ControlResponse { Ok = true, SwitchMilliseconds = result.Elapsed.TotalMilliseconds, BytesFetched = result.BytesFetched, Status = _mount.GetStatus() };
        }
        catch (Exception e)
        {
            string error = e is Manifest.ManifestException or MountException ? e.Message : $"{e.GetType().Name}: {e.Message}";
            _logger.LogError("switch to {Manifest} failed: {Error}", manifest, error);
            return new ControlResponse { Ok = false, Error = error };
        }
    }

    /// <summary>Sends one request to the mount at <paramref name="socketPath"/>.</summary>
    public static async Task<ControlResponse> SendAsync(string socketPath, ControlRequest request, CancellationToken cancel = default)
    {
        CheckTrustedDirectory(Path.GetDirectoryName(socketPath)!);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancel).ConfigureAwait(false);
        await using var stream = new NetworkStream(socket);
        byte[] bytes = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(request, ControlJsonContext.Default.ControlRequest) + "\n");
        await stream.WriteAsync(bytes, cancel).ConfigureAwait(false);
        using var reader = new StreamReader(stream);
        string line = await reader.ReadLineAsync(cancel).ConfigureAwait(false) ?? throw new IOException("the mount closed the control connection");
        return JsonSerializer.Deserialize(line, ControlJsonContext.Default.ControlResponse) ?? throw new IOException("empty response");
    }

    /// <summary>
    /// The client side of the same rule: only a directory owned by us (or root) that nobody else may
    /// write can hold the socket of a mount we talk to; otherwise someone else could be answering.
    /// </summary>
    private static void CheckTrustedDirectory(string dir)
    {
        if (Libc.LStat(dir, out var st) != 0) return; // nothing there: the connect fails and says so
        uint uid = Libc.GetUid();
        if (!st.IsDirectory || (st.Uid != uid && st.Uid != 0) || (st.Mode & 0x12) != 0)
            throw new IOException($"{dir} is not a private directory of this user (owner uid {st.Uid}, mode {Convert.ToString(st.Mode & 0xFFF, 8)}); refusing to trust a socket in it");
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Dispose();
        try { File.Delete(SocketPath); } catch (IOException) { }
        _stop.Dispose();
    }
}
