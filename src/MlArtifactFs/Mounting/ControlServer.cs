using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Mounting;

[JsonSourceGenerationOptions(WriteIndented = false)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
[JsonSerializable(typeof(MountStatus))]
[JsonSerializable(typeof(long))]
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
            string json;
            try { json = JsonSerializer.Serialize(response, ControlJsonContext.Default.ControlResponse); }
            catch (Exception e) when (e is InvalidOperationException or NotSupportedException or JsonException)
            {
                _logger.LogError("control response could not be written: {Type}: {Error}", e.GetType().Name, e.Message);
                json = JsonSerializer.Serialize(new ControlResponse { Ok = false, Error = $"{e.GetType().Name}: {e.Message}" }, ControlJsonContext.Default.ControlResponse);
            }
            try
            {
                await stream.WriteAsync(Encoding.UTF8.GetBytes(json + "\n"), _stop.Token).ConfigureAwait(false);
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
            string error = e is Manifest.ManifestException or Manifest.ManifestSignatureException or MountException ? e.Message : $"{e.GetType().Name}: {e.Message}";
            _logger.LogError("switch to {Manifest} failed: {Error}", manifest, error);
            return new ControlResponse { Ok = false, Error = error, SignatureRefused = e is Manifest.ManifestSignatureException };
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
