using System.Net;
using System.Text;

namespace AppHost.Tests;

/// <summary>
/// A minimal OTLP/HTTP receiver: accepts POST /v1/traces, /v1/metrics and /v1/logs (protobuf) and
/// keeps the raw bodies. Span names and attribute keys are plain UTF-8 strings inside the protobuf,
/// so a test can look for them without decoding.
/// </summary>
public sealed class OtlpCollector : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly List<(string Path, byte[] Body)> _received = [];

    public OtlpCollector()
    {
        var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Endpoint = $"http://127.0.0.1:{port}";
        _listener.Prefixes.Add(Endpoint + "/");
        _listener.Start();
        _ = Task.Run(LoopAsync);
    }

    public string Endpoint { get; }

    public bool ReceivedTraceContaining(string text)
    {
        byte[] needle = Encoding.UTF8.GetBytes(text);
        lock (_received)
            return _received.Any(r => r.Path == "/v1/traces" && r.Body.AsSpan().IndexOf(needle) >= 0);
    }

    private async Task LoopAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try { context = await _listener.GetContextAsync(); }
            catch (Exception) { return; }
            using var body = new MemoryStream();
            await context.Request.InputStream.CopyToAsync(body);
            lock (_received) _received.Add((context.Request.Url!.AbsolutePath, body.ToArray()));
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/x-protobuf";
            context.Response.Close();
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
    }
}
