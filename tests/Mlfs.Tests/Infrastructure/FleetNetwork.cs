using System.Net;
using System.Net.Sockets;

namespace Mlfs.Tests.Infrastructure;

/// <summary>
/// A fleet on one machine: a bridge with an address of its own (the "origin side", where the S3
/// relay, Redis and test servers listen) and one network namespace per node, each with its own address
/// on the bridge. Nothing here routes anywhere else. Nodes run under `nsenter --net` (network only), so
/// their FUSE mounts are visible to the test. Everything is removed on dispose.
/// </summary>
public sealed class FleetNetwork : IAsyncDisposable
{
    private readonly string _id = Guid.NewGuid().ToString("N")[..5];
    private readonly List<string> _namespaces = [];
    private string Bridge => $"mlb{_id}";

    public IPAddress Host { get; private set; } = IPAddress.None;
    public IReadOnlyList<(string Namespace, IPAddress Address)> Nodes => _nodes;
    private readonly List<(string, IPAddress)> _nodes = [];

    public static async Task<FleetNetwork> CreateAsync(int nodes)
    {
        var net = new FleetNetwork();
        try
        {
            await net.SetUpAsync(nodes);
            return net;
        }
        catch
        {
            await net.DisposeAsync();
            throw;
        }
    }

    private async Task SetUpAsync(int nodes)
    {
        // 10.X.Y.0/24 with X, Y from the id: test runs on one machine do not collide.
        int x = 100 + Convert.ToInt32(_id[..2], 16) % 100, y = Convert.ToInt32(_id[2..4], 16);
        string prefix = $"10.{x}.{y}.";
        Host = IPAddress.Parse(prefix + "1");
        await Ip("link", "add", Bridge, "type", "bridge");
        await Ip("addr", "add", $"{Host}/24", "dev", Bridge);
        await Ip("link", "set", Bridge, "up");
        for (int i = 0; i < nodes; i++)
        {
            string ns = $"mln{_id}{i}", outside = $"mlv{_id}{i}h", inside = $"mlv{_id}{i}n";
            var address = IPAddress.Parse(prefix + (10 + i));
            await Ip("netns", "add", ns);
            _namespaces.Add(ns);
            await Ip("link", "add", outside, "type", "veth", "peer", "name", inside);
            await Ip("link", "set", inside, "netns", ns);
            await Ip("link", "set", outside, "master", Bridge, "up");
            await Ip("-n", ns, "addr", "add", $"{address}/24", "dev", inside);
            await Ip("-n", ns, "link", "set", inside, "up");
            await Ip("-n", ns, "link", "set", "lo", "up");
            _nodes.Add((ns, address));
        }
    }

    /// <summary>The launcher for a process that should live in node <paramref name="i"/>'s network (and the host's mounts).</summary>
    public string[] Launcher(int i) => ["nsenter", $"--net=/run/netns/{_nodes[i].Item1}"];

    private static async Task Ip(params string[] args)
    {
        var result = await Repo.RunAsync("ip", args);
        if (result.ExitCode != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)} failed: {result.Stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var ns in _namespaces) await Repo.RunAsync("ip", ["netns", "del", ns]); // takes its veth end (and so the pair) with it
        await Repo.RunAsync("ip", ["link", "del", Bridge]);
    }

    public static int FreePort(IPAddress address)
    {
        using var l = new TcpListener(address, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}

/// <summary>
/// A TCP relay from an address of the test's (the bridge) to a loopback server: the S3 server as the
/// nodes see it. It counts the bytes the server sent, and can cap them at a total rate shared by
/// every connection (the origin's egress), with a token bucket.
/// </summary>
public sealed class TcpRelay : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly IPEndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly List<Socket> _open = [];
    private readonly Lock _bucketLock = new();
    private double _tokens;
    private long _lastRefill = System.Diagnostics.Stopwatch.GetTimestamp();
    private long _bytesFromTarget;

    public TcpRelay(IPAddress listen, IPEndPoint target, long? bytesPerSecond = null)
    {
        _target = target;
        RateLimit = bytesPerSecond;
        _listener = new TcpListener(listen, 0);
        _listener.Start();
        EndPoint = (IPEndPoint)_listener.LocalEndpoint;
        _loop = Task.Run(AcceptLoopAsync);
    }

    public IPEndPoint EndPoint { get; }
    public long? RateLimit { get; set; }
    public long BytesFromTarget => Interlocked.Read(ref _bytesFromTarget);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try { client = await _listener.AcceptSocketAsync(_stop.Token); }
            catch (Exception) { return; }
            _ = Task.Run(async () =>
            {
                using var server = new Socket(SocketType.Stream, ProtocolType.Tcp);
                lock (_open) { _open.Add(client); _open.Add(server); }
                try
                {
                    await server.ConnectAsync(_target, _stop.Token);
                    await Task.WhenAny(PumpAsync(client, server, counted: false), PumpAsync(server, client, counted: true));
                }
                catch (Exception) { }
                finally
                {
                    client.Dispose();
                    lock (_open) { _open.Remove(client); _open.Remove(server); }
                }
            });
        }
    }

    private async Task PumpAsync(Socket from, Socket to, bool counted)
    {
        var buffer = new byte[64 << 10];
        try
        {
            while (true)
            {
                int n = await from.ReceiveAsync(buffer, SocketFlags.None, _stop.Token);
                if (n == 0) break;
                if (counted)
                {
                    await ThrottleAsync(n);
                    Interlocked.Add(ref _bytesFromTarget, n);
                }
                for (int sent = 0; sent < n;) sent += await to.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None, _stop.Token);
            }
            to.Shutdown(SocketShutdown.Send);
        }
        catch (Exception) { }
    }

    private async Task ThrottleAsync(int bytes)
    {
        while (RateLimit is { } rate)
        {
            TimeSpan wait;
            lock (_bucketLock)
            {
                long now = System.Diagnostics.Stopwatch.GetTimestamp();
                _tokens = Math.Min(rate / 10.0, _tokens + rate * System.Diagnostics.Stopwatch.GetElapsedTime(_lastRefill, now).TotalSeconds);
                _lastRefill = now;
                if (_tokens >= bytes)
                {
                    _tokens -= bytes;
                    return;
                }
                wait = TimeSpan.FromSeconds((bytes - _tokens) / rate);
            }
            await Task.Delay(wait < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : wait, _stop.Token);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        lock (_open) foreach (var s in _open) s.Dispose();
        try { await _loop; } catch (Exception) { }
    }
}

/// <summary>A redis-server of the test's own on the bridge address (protected mode wants a password there).</summary>
public sealed class BridgeRedis : IAsyncDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mlfs-fleet-redis-").FullName;
    private System.Diagnostics.Process? _process;

    public BridgeRedis(IPAddress address)
    {
        Address = address;
        Port = FleetNetwork.FreePort(address);
    }

    public IPAddress Address { get; }
    public int Port { get; }
    public string Password { get; } = Guid.NewGuid().ToString("N");
    public string ConnectionString => $"{Address}:{Port},password={Password}";

    public async Task StartAsync()
    {
        var psi = new System.Diagnostics.ProcessStartInfo("redis-server",
            ["--bind", Address.ToString(), "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--requirepass", Password,
             "--save", "", "--appendonly", "no", "--dir", _dir])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        _process = System.Diagnostics.Process.Start(psi)!;
        _ = _process.StandardOutput.ReadToEndAsync();
        _ = _process.StandardError.ReadToEndAsync();
        for (int i = 0; i < 200; i++)
        {
            if ((await Repo.RunAsync("redis-cli", ["-h", Address.ToString(), "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--no-auth-warning", "-a", Password, "ping"])).Stdout.Contains("PONG"))
                return;
            await Task.Delay(25);
        }
        throw new InvalidOperationException("redis-server on the bridge did not answer");
    }

    public async Task StopAsync()
    {
        if (_process is null) return;
        _process.Kill();
        await _process.WaitForExitAsync();
        _process.Dispose();
        _process = null;
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>
/// Three redis-server masters in cluster mode on the bridge address, joined with `redis-cli --cluster
/// create` (no replicas; a dead master's slots are simply gone, the rest go on: require-full-coverage no).
/// </summary>
public sealed class BridgeRedisCluster : IAsyncDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mlfs-fleet-cluster-").FullName;
    private readonly System.Diagnostics.Process?[] _masters = new System.Diagnostics.Process?[3];

    public BridgeRedisCluster(IPAddress address)
    {
        Address = address;
        // Each master needs its port and port + 10000 (the cluster bus) free.
        var ports = new List<int>();
        for (int candidate = 21000 + Random.Shared.Next(0, 8000); ports.Count < 3; candidate++)
            if (IsFree(address, candidate) && IsFree(address, candidate + 10000)) ports.Add(candidate);
        Ports = ports;
    }

    public IPAddress Address { get; }
    public IReadOnlyList<int> Ports { get; }
    public string Password { get; } = Guid.NewGuid().ToString("N");
    public string ConnectionString => string.Join(",", Ports.Select(p => $"{Address}:{p}")) + $",password={Password}";

    private static bool IsFree(IPAddress address, int port)
    {
        try
        {
            using var l = new TcpListener(address, port);
            l.Start();
            return true;
        }
        catch (SocketException) { return false; }
    }

    private string Port(int i) => Ports[i].ToString(System.Globalization.CultureInfo.InvariantCulture);

    public async Task StartAsync()
    {
        for (int i = 0; i < 3; i++)
        {
            string dir = Path.Combine(_dir, Port(i));
            Directory.CreateDirectory(dir);
            var psi = new System.Diagnostics.ProcessStartInfo("redis-server",
                ["--bind", Address.ToString(), "--port", Port(i), "--requirepass", Password, "--masterauth", Password,
                 "--cluster-enabled", "yes", "--cluster-config-file", Path.Combine(dir, "nodes.conf"), "--cluster-node-timeout", "2000",
                 "--cluster-require-full-coverage", "no", "--save", "", "--appendonly", "no", "--dir", dir])
            { RedirectStandardOutput = true, RedirectStandardError = true };
            var p = System.Diagnostics.Process.Start(psi)!;
            _ = p.StandardOutput.ReadToEndAsync();
            _ = p.StandardError.ReadToEndAsync();
            _masters[i] = p;
        }
        for (int i = 0; i < 3; i++) await WaitForAsync(i, "ping", "PONG");
        var create = await Repo.RunAsync("redis-cli", ["--no-auth-warning", "-a", Password, "--cluster", "create",
            .. Enumerable.Range(0, 3).Select(i => $"{Address}:{Port(i)}"), "--cluster-replicas", "0", "--cluster-yes"], null, TimeSpan.FromMinutes(1));
        if (create.ExitCode != 0) throw new InvalidOperationException("redis-cli --cluster create failed: " + create.Stdout + create.Stderr);
        for (int i = 0; i < 3; i++) await WaitForAsync(i, "cluster info", "cluster_state:ok");
    }

    private async Task WaitForAsync(int i, string command, string expect)
    {
        for (int attempt = 0; attempt < 400; attempt++)
        {
            var r = await Repo.RunAsync("redis-cli", ["-h", Address.ToString(), "-p", Port(i), "--no-auth-warning", "-a", Password, .. command.Split(' ')]);
            if (r.Stdout.Contains(expect, StringComparison.Ordinal)) return;
            await Task.Delay(25);
        }
        throw new InvalidOperationException($"redis master {Port(i)} never answered {command} with {expect}");
    }

    /// <summary>Kills master <paramref name="i"/> (SIGKILL): its slots go, the other masters keep theirs.</summary>
    public async Task KillAsync(int i)
    {
        if (_masters[i] is not { } p) return;
        p.Kill();
        await p.WaitForExitAsync();
        p.Dispose();
        _masters[i] = null;
    }

    public async ValueTask DisposeAsync()
    {
        for (int i = 0; i < 3; i++) await KillAsync(i);
        Directory.Delete(_dir, recursive: true);
    }
}
