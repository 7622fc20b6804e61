using System.Net;

namespace Mlfs.Tests.Infrastructure;

public enum ProxyFault
{
    None, ServiceUnavailable, SlowDown, ConnectionReset, TruncatedBody, FlippedByte, Stall, HtmlErrorWith200,
    /// <summary>206 whose Content-Range names a range one byte later than the one asked for.</summary>
    WrongContentRange,
    /// <summary>206 for only the first half of the range asked for, with honest headers (a short length).</summary>
    ShortRange,
    /// <summary>The Range header dropped: 200 with the whole object.</summary>
    RangeIgnored,
    /// <summary>Right status and headers, but the body shifted by one byte: only verification can tell.</summary>
    ShiftedBody,
    /// <summary>400 InvalidArgument: the server refuses the request itself.</summary>
    BadRequest,
    /// <summary>500 with a 1 GiB body (generated, never held): a client must read only a bounded part of it.</summary>
    HugeErrorBody,
}

/// <summary>
/// An HTTP reverse proxy between mlfs and the S3 server that injects faults into GET responses:
/// 503s, SlowDown, connection resets, truncated bodies, flipped bytes, stalls, wrong ranges and lengths. It forwards the
/// signed request unchanged (same Host header), so signatures still verify at the server.
/// It also counts GETs and bytes, and can hold bodies after N bytes until released.
/// </summary>
public sealed class FaultProxy : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly HttpClient _upstream;
    private readonly string _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _gets;
    private long _bytes;
    private int _faultsInjected;

    public FaultProxy(string target)
    {
        _target = target.TrimEnd('/');
        _upstream = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false, UseCookies = false, AutomaticDecompression = DecompressionMethods.None });
        int port = FreePort();
        Endpoint = $"http://127.0.0.1:{port}";
        _listener.Prefixes.Add(Endpoint + "/");
        _listener.Start();
        _loop = Task.Run(LoopAsync);
    }

    public string Endpoint { get; }
    /// <summary>Chooses a fault for the Nth GET (1-based) of a key.</summary>
    public Func<int, string, ProxyFault> Faults { get; set; } = (_, _) => ProxyFault.None;
    /// <summary>Bodies pause after this many bytes until <see cref="Release"/> is completed.</summary>
    public long? PauseAfter { get; set; }
    public TaskCompletionSource Release { get; set; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource Paused { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public int Gets => Volatile.Read(ref _gets);
    public long BytesSent => Interlocked.Read(ref _bytes);
    public int FaultsInjected => Volatile.Read(ref _faultsInjected);
    /// <summary>Bytes of <see cref="ProxyFault.HugeErrorBody"/> bodies the client took before it hung up.</summary>
    public long ErrorBodyBytes => Interlocked.Read(ref _errorBodyBytes);
    private long _errorBodyBytes;
    /// <summary>The Range header of every GET, in arrival order ("" when none).</summary>
    public System.Collections.Concurrent.ConcurrentQueue<string> Ranges { get; } = new();

    private static int FreePort()
    {
        var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception) when (_stop.IsCancellationRequested) { return; }
            catch (HttpListenerException) { return; }
            _ = Task.Run(() => HandleAsync(context));
        }
    }

    private async Task HandleAsync(HttpListenerContext context)
    {
        var request = context.Request;
        var response = context.Response;
        try
        {
            int n = request.HttpMethod == "GET" ? Interlocked.Increment(ref _gets) : 0;
            if (n > 0) Ranges.Enqueue(request.Headers["Range"] ?? "");
            var fault = n > 0 ? Faults(n, request.Url!.AbsolutePath) : ProxyFault.None;
            if (fault != ProxyFault.None) Interlocked.Increment(ref _faultsInjected);
            // S3 error answers: the status and an XML body naming the code.
            (int Status, string Code)? error = fault switch
            {
                ProxyFault.ServiceUnavailable => (503, "ServiceUnavailable"),
                ProxyFault.SlowDown => (503, "SlowDown"),
                ProxyFault.BadRequest => (400, "InvalidArgument"),
                _ => null,
            };
            if (error is var (status, code))
            {
                response.StatusCode = status;
                await response.OutputStream.WriteAsync(System.Text.Encoding.UTF8.GetBytes($"<Error><Code>{code}</Code></Error>"));
                response.Close();
                return;
            }
            if (fault == ProxyFault.HugeErrorBody)
            {
                response.StatusCode = 500;
                response.ContentLength64 = 1L << 30;
                var chunk = System.Text.Encoding.UTF8.GetBytes("<Error><Code>InternalError</Code>" + new string(' ', 65_000));
                for (long written = 0; written < 1L << 30; written += chunk.Length)
                {
                    await response.OutputStream.WriteAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, (1L << 30) - written)));
                    Interlocked.Add(ref _errorBodyBytes, chunk.Length);
                }
                response.Close();
                return;
            }
            if (fault == ProxyFault.HtmlErrorWith200)
            {
                response.StatusCode = 200;
                byte[] body = "<html><body>Gateway error</body></html>"u8.ToArray();
                response.ContentLength64 = body.Length;
                await response.OutputStream.WriteAsync(body);
                response.Close();
                return;
            }

            using var forward = new HttpRequestMessage(new HttpMethod(request.HttpMethod), _target + request.RawUrl);
            foreach (string? name in request.Headers.AllKeys)
            {
                if (name is null || name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) continue;
                if (name.Equals("Range", StringComparison.OrdinalIgnoreCase) && fault is ProxyFault.RangeIgnored or ProxyFault.ShortRange) continue;
                forward.Headers.TryAddWithoutValidation(name, request.Headers.GetValues(name) ?? []);
            }
            if (fault == ProxyFault.ShortRange && ParseRange(request.Headers["Range"]) is var (first, last))
                forward.Headers.TryAddWithoutValidation("Range", $"bytes={first}-{first + (last - first) / 2}"); // Range is not signed
            forward.Headers.Host = request.Headers["Host"]; // the signature covers it
            if (request.HasEntityBody)
            {
                var ms = new MemoryStream();
                await request.InputStream.CopyToAsync(ms);
                forward.Content = new ByteArrayContent(ms.ToArray());
            }
            using var upstream = await _upstream.SendAsync(forward, HttpCompletionOption.ResponseHeadersRead);
            response.StatusCode = (int)upstream.StatusCode;
            foreach (var h in upstream.Headers.Concat(upstream.Content.Headers))
            {
                if (h.Key.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase)) continue;
                if (h.Key.Equals("Content-Length", StringComparison.OrdinalIgnoreCase)) { response.ContentLength64 = long.Parse(h.Value.First(), System.Globalization.CultureInfo.InvariantCulture); continue; }
                foreach (var v in h.Value)
                {
                    if (fault == ProxyFault.WrongContentRange && h.Key.Equals("Content-Range", StringComparison.OrdinalIgnoreCase)
                        && upstream.Content.Headers.ContentRange is { From: { } from, To: { } to, Length: var size })
                        response.Headers.Add(h.Key, $"bytes {from + 1}-{to + 1}/{size?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "*"}");
                    else
                        response.Headers.Add(h.Key, v);
                }
            }
            await using var body2 = await upstream.Content.ReadAsStreamAsync();
            long length = upstream.Content.Headers.ContentLength ?? long.MaxValue;
            var buffer = new byte[64 * 1024];
            long sent = 0;
            bool pendingPad = false;
            while (true)
            {
                if (PauseAfter is { } pause && sent >= pause)
                {
                    Paused.TrySetResult();
                    await Release.Task;
                }
                if (sent >= length / 2 && length != long.MaxValue)
                {
                    if (fault == ProxyFault.ConnectionReset || fault == ProxyFault.TruncatedBody) { response.Abort(); return; }
                    if (fault == ProxyFault.Stall) { await Task.Delay(Timeout.Infinite, _stop.Token); }
                }
                int want = buffer.Length;
                if (PauseAfter is { } p && sent < p) want = (int)Math.Min(want, p - sent);
                if (length != long.MaxValue && sent < length / 2) want = (int)Math.Min(want, Math.Max(1, length / 2 - sent));
                int read = await body2.ReadAsync(buffer.AsMemory(0, want));
                if (read == 0) break;
                if (fault == ProxyFault.FlippedByte && sent <= length / 2 && length / 2 < sent + read) buffer[length / 2 - sent] ^= 0x01;
                if (fault == ProxyFault.ShiftedBody && sent == 0 && read > 1)
                {
                    // Drop the first byte and pad the end, so the length stays right and every byte is off by one.
                    await response.OutputStream.WriteAsync(buffer.AsMemory(1, read - 1));
                    sent += read;
                    Interlocked.Add(ref _bytes, read);
                    pendingPad = true;
                    continue;
                }
                await response.OutputStream.WriteAsync(buffer.AsMemory(0, read));
                sent += read;
                Interlocked.Add(ref _bytes, read);
            }
            if (pendingPad) await response.OutputStream.WriteAsync(new byte[1]);
            response.Close();
        }
        catch (Exception e) when (e is HttpListenerException or IOException or OperationCanceledException or ObjectDisposedException or HttpRequestException)
        {
            try { response.Abort(); } catch (ObjectDisposedException) { }
        }
    }

    private static (long First, long Last)? ParseRange(string? header)
    {
        // "bytes=first-last", the only form mlfs sends.
        if (header is null || !header.StartsWith("bytes=", StringComparison.Ordinal)) return null;
        string[] parts = header["bytes=".Length..].Split('-');
        return parts.Length == 2 && long.TryParse(parts[0], out long first) && long.TryParse(parts[1], out long last) ? (first, last) : null;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        Release.TrySetResult();
        _listener.Stop();
        _listener.Close();
        try { await _loop; } catch (Exception) { }
        _upstream.Dispose();
    }
}
