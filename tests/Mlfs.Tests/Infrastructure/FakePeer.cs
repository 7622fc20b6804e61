using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Mlfs.Tests.Infrastructure;

public enum PeerFault { FlippedByte, Stall, WrongLength }

/// <summary>
/// A peer that holds the fleet token and answers every chunk request badly: the right length with one
/// byte flipped, a body that stops halfway and stalls, or a length that is not the chunk's. The test
/// announces it in Redis as a holder of every chunk.
/// </summary>
public sealed class FakePeer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly Func<string, byte[]?> _chunk;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _requests;

    public FakePeer(IPAddress address, PeerFault fault, Func<string, byte[]?> chunkBySha)
    {
        Fault = fault;
        _chunk = chunkBySha;
        _listener = new TcpListener(address, 0);
        _listener.Start();
        EndPoint = (IPEndPoint)_listener.LocalEndpoint;
        _loop = Task.Run(LoopAsync);
    }

    public PeerFault Fault { get; }
    public IPEndPoint EndPoint { get; }
    public int Requests => Volatile.Read(ref _requests);

    private async Task LoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try { socket = await _listener.AcceptSocketAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(async () =>
            {
                using var s = socket;
                await using var stream = new NetworkStream(s);
                var buffer = new byte[8192];
                int n = 0;
                try
                {
                    while (n < buffer.Length && Encoding.ASCII.GetString(buffer, 0, n).IndexOf("\r\n\r\n", StringComparison.Ordinal) < 0)
                    {
                        int r = await stream.ReadAsync(buffer.AsMemory(n), _stop.Token);
                        if (r == 0) return;
                        n += r;
                    }
                    Interlocked.Increment(ref _requests);
                    string target = Encoding.ASCII.GetString(buffer, 0, n).Split(' ')[1];
                    var bytes = _chunk(target[(target.LastIndexOf('/') + 1)..]);
                    if (bytes is null)
                    {
                        await stream.WriteAsync("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"u8.ToArray(), _stop.Token);
                        return;
                    }
                    bytes = (byte[])bytes.Clone();
                    int length = Fault == PeerFault.WrongLength ? bytes.Length + 1 : bytes.Length;
                    await stream.WriteAsync(Encoding.ASCII.GetBytes($"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"), _stop.Token);
                    switch (Fault)
                    {
                        case PeerFault.FlippedByte:
                            bytes[bytes.Length / 3] ^= 0x40;
                            await stream.WriteAsync(bytes, _stop.Token);
                            break;
                        case PeerFault.WrongLength:
                            await stream.WriteAsync(bytes, _stop.Token);
                            await stream.WriteAsync(new byte[1], _stop.Token);
                            break;
                        case PeerFault.Stall:
                            await stream.WriteAsync(bytes.AsMemory(0, bytes.Length / 2), _stop.Token);
                            await Task.Delay(Timeout.Infinite, _stop.Token);
                            break;
                    }
                }
                catch (Exception) { }
            });
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        try { await _loop; } catch (Exception) { }
    }
}
