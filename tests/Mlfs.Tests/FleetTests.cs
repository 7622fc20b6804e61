using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MlArtifactFs.Fuse;
using MlArtifactFs.Manifest;
using Mlfs.Tests.Infrastructure;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// Fleet mode with real processes on one machine: each node an `mlfs mount` in a network namespace of
/// its own with its own address on a bridge the test creates; the S3 server reached through a relay on
/// the bridge (which counts the bytes it served); a redis-server on the bridge as the holders index.
/// Every node reads from the host through its own mount point, and every byte is checked.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class FleetTests(S3Fixture s3, ITestOutputHelper output) : IAsyncLifetime
{
    private const int PeerPort = 7070;
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-fleet-");
    private readonly TestModel _model = new();
    private readonly string _token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
    private readonly List<MountProcess> _nodes = [];
    private FleetNetwork _net = null!;
    private BridgeRedis _redis = null!;
    private TcpRelay _origin = null!;

    public async Task InitializeAsync()
    {
        _net = await FleetNetwork.CreateAsync(4);
        _redis = new BridgeRedis(_net.Host);
        await _redis.StartAsync();
        var s3Uri = new Uri(s3.Endpoint);
        _origin = new TcpRelay(_net.Host, new IPEndPoint(IPAddress.Parse(s3Uri.Host), s3Uri.Port));
    }

    public async Task DisposeAsync()
    {
        foreach (var node in _nodes) await node.DisposeAsync();
        foreach (var dir in _work.EnumerateDirectories("mnt-*"))
            for (int i = 0; i < 3 && FuseMounter.IsMountPoint(dir.FullName); i++) FuseMounter.TryUnmount(dir.FullName, lazy: true);
        await _origin.DisposeAsync();
        await _redis.DisposeAsync();
        await _net.DisposeAsync();
        _model.Dispose();
        _work.Delete(recursive: true);
    }

    private string MountPoint(int node) => Path.Combine(_work.FullName, $"mnt-{node}");

    /// <summary>Starts node <paramref name="i"/> in its namespace, serving on its own address.</summary>
    private Task<MountProcess> StartNodeAsync(int i, string manifest, bool fleet = true, params string[] extra) =>
        StartNodeAsync(i, manifest, _redis.ConnectionString, fleet, extra);

    private async Task<MountProcess> StartNodeAsync(int i, string manifest, string redis, bool fleet, params string[] extra)
    {
        Directory.CreateDirectory(MountPoint(i));
        var env = s3.Environment($"http://{_origin.EndPoint}");
        env["MLFS_REDIS"] = redis;
        env["MLFS_PEER_TOKEN"] = _token;
        string[] args = fleet ? ["--peer-listen", $"{_net.Nodes[i].Address}:{PeerPort}", .. extra] : extra;
        var node = await MountProcess.StartAsync(_net.Launcher(i), _work.FullName, manifest, MountPoint(i),
            Path.Combine(_work.FullName, $"cache-{i}"), env, null, true, args);
        _nodes.Add(node);
        return node;
    }

    private static async Task<JsonElement> StatusAsync(int node, string mountPoint)
    {
        var result = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mountPoint]);
        Assert.True(result.ExitCode == 0, $"status of node {node}: {result.Stderr}");
        return JsonDocument.Parse(result.Stdout).RootElement;
    }

    [Fact]
    public async Task FourNodesReadingAtOnceFetchEachChunkFromStorageAboutOnce()
    {
        _model.Add("config.json", 1500, 7).Add("model.safetensors", (256 << 20) + 4097, 8);
        string manifest = await _model.PublishAsync(s3, "fleet4", chunkSize: 4 << 20, prefetch: ["config.json"]);
        long modelBytes = _model.Files.Values.Sum(f => (long)f.Length);
        // The hedge bound is for peers that died, not for a slow machine: here no node may give up waiting
        // on a live one, so the storage bytes measure the single flight alone, whatever the machine's speed.
        for (int i = 0; i < 4; i++) await StartNodeAsync(i, manifest, true, "--peer-wait", "120");
        long beforeReads = _origin.BytesFromTarget; // the prefetched config, once per node at most

        var sw = Stopwatch.StartNew();
        var wrong = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            var bytes = await File.ReadAllBytesAsync(Path.Combine(MountPoint(i), "model.safetensors"));
            return Check.WrongBytes(_model.Files["model.safetensors"], bytes);
        })));
        var elapsed = sw.Elapsed;

        long fromOrigin = _origin.BytesFromTarget;
        long fromPeers = 0, hedges = 0, served = 0, peerFailures = 0;
        var errors = new List<string>(); // e.g. Redis timeouts under load: a lease Redis cannot answer for is granted
        for (int i = 0; i < 4; i++)
        {
            var status = await StatusAsync(i, MountPoint(i));
            fromPeers += status.GetProperty("bytes_from_peers").GetInt64();
            hedges += status.GetProperty("fleet_hedges").GetInt64();
            peerFailures += status.GetProperty("peer_failures").GetInt64();
            served += status.GetProperty("fleet").GetProperty("bytes_served").GetInt64();
            foreach (var e in status.GetProperty("errors").EnumerateObject())
                if (e.Value.ValueKind == System.Text.Json.JsonValueKind.Number && e.Value.GetInt64() > 0) errors.Add($"node {i} {e.Name} {e.Value}");
        }
        // Warnings name what sent a chunk to storage (a lease or holder lookup Redis did not answer in time, a peer that failed).
        var warnings = _nodes.SelectMany((n, i) => n.Stderr.Split('\n').Where(l => l.Contains("warn:", StringComparison.Ordinal)).Select(l => $"node {i}: {l.Trim()}")).Take(12).ToList();
        string failures = $"{hedges} hedges, {peerFailures} peer failures, errors: {(errors.Count == 0 ? "none" : string.Join(", ", errors))}" +
                          (warnings.Count == 0 ? "" : "; warnings:\n" + string.Join('\n', warnings));
        double ratio = (double)fromOrigin / modelBytes;
        output.WriteLine($"4 nodes, {modelBytes} bytes each in {elapsed.TotalSeconds:0.00} s: storage served {fromOrigin} bytes ({ratio:0.000} x the model; " +
                         $"{beforeReads} before the reads), peers {fromPeers} bytes (served {served}), {failures}; wrong bytes {string.Join(", ", wrong)}");
        Assert.All(wrong, w => Assert.Equal(0, w));
        Assert.True(ratio <= 1.1, $"storage served {ratio:0.000} x the model to 4 nodes (goal: at most 1.1 x); {failures}");
        Assert.True(fromPeers >= 2 * modelBytes, $"only {fromPeers} bytes came from peers");
    }

    /// <summary>Writes holder entries as if nodes had announced them (for 10 minutes), and removes one.</summary>
    private async Task SetHoldersAsync(IEnumerable<string> ids, string[] add, string? remove = null)
    {
        using var redis = await ConnectionMultiplexer.ConnectAsync(_redis.ConnectionString);
        var db = redis.GetDatabase();
        double until = DateTimeOffset.UtcNow.AddMinutes(10).ToUnixTimeMilliseconds();
        foreach (var id in ids)
        {
            if (remove is not null) await db.SortedSetRemoveAsync(HoldersKey(id), remove);
            foreach (var member in add) await db.SortedSetAddAsync(HoldersKey(id), member, until);
        }
    }

    /// <summary>The holders key of a chunk, as mlfs names it (the namespace is a hash of the token; the chunk's id is algorithm:digest).</summary>
    private string HoldersKey(string id) =>
        $"mlfs:fleet:{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes("mlfs-fleet:" + _token)))[..16]}:{{{id}}}:holders";

    /// <summary>The ids (algorithm:digest) of every chunk of a manifest's only (or named) file.</summary>
    private static List<string> ChunkIds(string manifestPath, string? file = null)
    {
        var manifest = ManifestLoader.Load(manifestPath);
        var f = file is null ? manifest.Files!.Single() : manifest.Files!.Single(x => x.Path == file);
        string algorithm = manifest.ChunkHash ?? "sha256";
        return [.. f.Chunks!.Select(hex => $"{algorithm}:{hex}")];
    }

    public static TheoryData<PeerFault, ManifestKind> BadPeers()
    {
        var data = new TheoryData<PeerFault, ManifestKind>();
        foreach (var fault in new[] { PeerFault.FlippedByte, PeerFault.Stall, PeerFault.WrongLength })
            foreach (var kind in new[] { ManifestKind.Blake3, ManifestKind.Sha256 })
                data.Add(fault, kind);
        return data;
    }

    [Theory]
    [MemberData(nameof(BadPeers))]
    public async Task ABadPeerIsSkippedAndCountedAndNoWrongByteIsServed(PeerFault fault, ManifestKind kind)
    {
        _model.Add("model.safetensors", (24 << 20) + 123, 21);
        string manifest = await _model.PublishAsync(s3, "fleetbad", chunkSize: 1 << 20, chunkHash: kind.Algorithm());
        var parsed = ManifestLoader.Load(manifest);
        var file = parsed.Files!.Single();
        var bytes = _model.Files["model.safetensors"];
        var chunks = file.Chunks!.Select((hex, i) => (hex, i)).ToDictionary(c => c.hex, c => bytes.AsSpan(c.i << 20, Math.Min(1 << 20, bytes.Length - (c.i << 20))).ToArray());

        // The liar holds the token and is announced as a holder of every chunk (it answers by the digest in the path).
        await using var liar = new FakePeer(_net.Host, fault, hex => chunks.GetValueOrDefault(hex));
        await SetHoldersAsync(ChunkIds(manifest), add: [liar.EndPoint.ToString()]);

        await StartNodeAsync(0, manifest, true, "--stall-timeout", "2");
        var read = await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"));
        var status = await StatusAsync(0, MountPoint(0));
        var peers = status.GetProperty("fleet").GetProperty("peers");
        long liarFailures = peers.TryGetProperty(liar.EndPoint.ToString(), out var p) ? p.GetProperty("failures").GetInt64() : 0;
        output.WriteLine($"{fault}, {kind}: {liar.Requests} requests to the bad peer, {liarFailures} failures counted, " +
                         $"{status.GetProperty("bytes_from_peers").GetInt64()} bytes from peers, {status.GetProperty("bytes_fetched").GetInt64()} from storage; wrong bytes {Check.WrongBytes(bytes, read)}");
        Assert.Equal(0, Check.WrongBytes(bytes, read));
        Assert.True(liar.Requests >= 1, "the bad peer was never asked");
        Assert.True(liarFailures >= 1, "the bad peer's failure was not counted");
        Assert.Equal(0, status.GetProperty("bytes_from_peers").GetInt64());
        Assert.Equal(bytes.Length, status.GetProperty("bytes_fetched").GetInt64()); // all of it from storage, once
    }

    [Fact]
    public async Task APeerKilledMidTransferAndRedisStoppedMidRunFailNoRead()
    {
        const int size = (96 << 20) + 77;
        _model.Add("model.safetensors", size, 31);
        string manifest = await _model.PublishAsync(s3, "fleetkill", chunkSize: 1 << 20);
        var expected = _model.Files["model.safetensors"];

        // Node 0 holds the whole model. Node 1 copies it from node 0 through a relay that carries 20 MB/s
        // (announced in node 0's place), and node 0 is killed once 8 MiB went through: mid-transfer.
        await StartNodeAsync(0, manifest);
        Assert.Equal(0, Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"))));
        var node0 = new IPEndPoint(_net.Nodes[0].Address, PeerPort);
        await using var slowLink = new TcpRelay(_net.Host, node0, bytesPerSecond: 20_000_000);
        await SetHoldersAsync(ChunkIds(manifest), add: [slowLink.EndPoint.ToString()], remove: node0.ToString());
        var node1 = await StartNodeAsync(1, manifest);
        var reading1 = Task.Run(async () => Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(MountPoint(1), "model.safetensors"))));
        while (slowLink.BytesFromTarget < 8 << 20 && !reading1.IsCompleted) await Task.Delay(10);
        Assert.False(reading1.IsCompleted, "node 1 finished before node 0 could be killed");
        _nodes[0].Process.Kill(); // SIGKILL: mid-transfer, its mount dies with it
        await _nodes[0].Process.WaitForExitAsync();
        long wrong1 = await reading1;
        FuseMounter.TryUnmount(MountPoint(0), lazy: true);

        // Node 2 reads while Redis goes away: no sharing from then on, and no failed read.
        await StartNodeAsync(2, manifest);
        var wrong2 = await ReadWhileAsync(2, expected, 4 << 20, () => _redis.StopAsync());
        var status1 = await StatusAsync(1, MountPoint(1));
        var status2 = await StatusAsync(2, MountPoint(2));
        output.WriteLine($"node 1 (peer killed): {status1.GetProperty("bytes_from_peers").GetInt64()} bytes from peers, {status1.GetProperty("bytes_fetched").GetInt64()} from storage, " +
                         $"{status1.GetProperty("peer_failures").GetInt64()} peer failures, wrong bytes {wrong1}; " +
                         $"node 2 (Redis stopped): {status2.GetProperty("bytes_from_peers").GetInt64()} from peers, {status2.GetProperty("bytes_fetched").GetInt64()} from storage, wrong bytes {wrong2}");
        Assert.Equal(0, wrong1);
        Assert.Equal(0, wrong2);
        Assert.True(status1.GetProperty("bytes_from_peers").GetInt64() > 0 && status1.GetProperty("bytes_fetched").GetInt64() > 0,
            "node 1 should have taken part of the model from node 0 and the rest from storage");
        Assert.True(status1.GetProperty("peer_failures").GetInt64() >= 1, "the dead peer's failure was not counted");
        Assert.False(node1.Process.HasExited);
    }

    [Fact]
    public async Task OnARedisClusterSharingGoesOnWhenAMasterDies()
    {
        const int size = (48 << 20) + 99;
        _model.Add("model.safetensors", size, 51);
        string manifest = await _model.PublishAsync(s3, "fleetcluster", chunkSize: 1 << 20);
        var expected = _model.Files["model.safetensors"];
        var sw = Stopwatch.StartNew();
        await using var cluster = new BridgeRedisCluster(_net.Host);
        await cluster.StartAsync();
        output.WriteLine($"cluster up after {sw.Elapsed.TotalSeconds:0.0} s");

        await StartNodeAsync(0, manifest, cluster.ConnectionString, true);
        Assert.Equal(0, Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"))));
        // Node 1 reads while one of the three masters is killed: its third of the chunks' keys is gone.
        await StartNodeAsync(1, manifest, cluster.ConnectionString, true);
        output.WriteLine($"node 0 read after {sw.Elapsed.TotalSeconds:0.0} s");
        long wrong1 = await ReadWhileAsync(1, expected, 4 << 20, () => cluster.KillAsync(2));
        output.WriteLine($"node 1 read after {sw.Elapsed.TotalSeconds:0.0} s");
        // Node 2 starts after: the two masters left still name holders for their chunks.
        await StartNodeAsync(2, manifest, cluster.ConnectionString, true);
        output.WriteLine($"node 2 ready after {sw.Elapsed.TotalSeconds:0.0} s");
        long wrong2 = Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(MountPoint(2), "model.safetensors")));
        output.WriteLine($"node 2 read after {sw.Elapsed.TotalSeconds:0.0} s");
        var status1 = await StatusAsync(1, MountPoint(1));
        var status2 = await StatusAsync(2, MountPoint(2));
        output.WriteLine($"Redis Cluster of 3, one killed: node 1 {status1.GetProperty("bytes_from_peers").GetInt64()} bytes from peers, {status1.GetProperty("bytes_fetched").GetInt64()} from storage, wrong {wrong1}; " +
                         $"node 2 (after) {status2.GetProperty("bytes_from_peers").GetInt64()} from peers, {status2.GetProperty("bytes_fetched").GetInt64()} from storage, wrong {wrong2}");
        Assert.Equal(0, wrong1);
        Assert.Equal(0, wrong2);
        Assert.True(status2.GetProperty("bytes_from_peers").GetInt64() >= size / 3,
            "sharing did not go on with two of three masters:\n" + string.Join('\n', _nodes[^1].Stderr.Split('\n').Where(l => l.Contains("edis", StringComparison.Ordinal) || l.Contains("fleet", StringComparison.Ordinal)).Take(30)));
    }

    [Fact]
    public async Task FleetOptionsThatCannotWorkAreRefusedByName()
    {
        _model.Add("config.json", 100, 61);
        string manifest = await _model.PublishAsync(s3, "fleetcli");
        string mp = Directory.CreateDirectory(MountPoint(0)).FullName;
        async Task<string> Refused(string? token, string? redis, params string[] options)
        {
            var env = s3.Environment();
            env["MLFS_PEER_TOKEN"] = token;
            env["MLFS_REDIS"] = redis;
            var result = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", manifest, "--cache-dir", Path.Combine(_work.FullName, "cache-cli"), .. options, mp], env);
            Assert.Equal(2, result.ExitCode);
            Assert.False(FuseMounter.IsMountPoint(mp));
            return result.Stderr;
        }
        string listen = $"{_net.Host}:{PeerPort}";
        Assert.Contains("token", await Refused(null, _redis.ConnectionString, "--peer-listen", listen));
        Assert.Contains("at least 16", await Refused("short", _redis.ConnectionString, "--peer-listen", listen));
        Assert.Contains("--peer-advertise", await Refused(_token, _redis.ConnectionString, "--peer-listen", "0.0.0.0:7070"));
        Assert.Contains("--peer-listen \"node-1:7070\"", await Refused(_token, _redis.ConnectionString, "--peer-listen", "node-1:7070"));
        Assert.Contains("--redis", await Refused(_token, null, "--peer-listen", listen));
        string tokenFile = Path.Combine(_work.FullName, "missing-token");
        Assert.Contains(tokenFile, await Refused(null, _redis.ConnectionString, "--peer-listen", listen, "--peer-token-file", tokenFile));
    }

    [Fact]
    public async Task EvictedChunksLeaveTheHoldersIndex()
    {
        _model.Add("a.bin", (6 << 20) + 3, 81).Add("b.bin", (6 << 20) + 5, 82);
        string manifest = await _model.PublishAsync(s3, "fleetevict", chunkSize: 1 << 20);
        var files = new[] { "a.bin", "b.bin" }.ToDictionary(f => f, f => ChunkIds(manifest, f));
        var self = new IPEndPoint(_net.Nodes[0].Address, PeerPort).ToString();
        // Room for one of the two files: reading b after a evicts a.
        await StartNodeAsync(0, manifest, true, "--cache-size", "9M", "--no-passthrough");
        Assert.Equal(0, Check.WrongBytes(_model.Files["a.bin"], await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "a.bin"))));
        using var redis = await ConnectionMultiplexer.ConnectAsync(_redis.ConnectionString);
        var db = redis.GetDatabase();
        async Task<int> HeldAsync(string file)
        {
            int n = 0;
            foreach (var id in files[file]) if (await db.SortedSetScoreAsync(HoldersKey(id), self) is not null) n++;
            return n;
        }
        // Announcements are sent as chunks are stored: wait for all of a's.
        var waited = Stopwatch.StartNew();
        while (await HeldAsync("a.bin") < files["a.bin"].Count && waited.Elapsed < TimeSpan.FromMinutes(1)) await Task.Delay(20);
        Assert.Equal(files["a.bin"].Count, await HeldAsync("a.bin"));
        Assert.Equal(0, Check.WrongBytes(_model.Files["b.bin"], await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "b.bin"))));
        // Chunks are evicted one by one, least recently used first (a's), as b's arrive; each withdrawal is
        // sent when its chunk goes. Wait on the effect, bounded: what is announced is exactly what is left.
        long chunksEvicted = 0;
        int held = 0, total = files["a.bin"].Count + files["b.bin"].Count;
        waited.Restart();
        while (waited.Elapsed < TimeSpan.FromMinutes(1))
        {
            chunksEvicted = (await StatusAsync(0, MountPoint(0))).GetProperty("chunks_evicted").GetInt64();
            held = await HeldAsync("a.bin") + await HeldAsync("b.bin");
            if (chunksEvicted > 0 && held == total - chunksEvicted) break;
            await Task.Delay(20);
        }
        output.WriteLine($"{chunksEvicted} chunks evicted; a.bin's chunks still announced: {await HeldAsync("a.bin")} of {files["a.bin"].Count}, b.bin's: {await HeldAsync("b.bin")}");
        Assert.True(chunksEvicted > 0, "reading b.bin through a 9 MiB cache evicted nothing");
        Assert.Equal(total - chunksEvicted, held);
        Assert.True(await HeldAsync("a.bin") < files["a.bin"].Count, "a.bin's chunks went first (least recently used)");
    }

    /// <summary>
    /// Peers ask a node for chunks while it evicts them (reading another file through a cache with room for
    /// one): every answer is the exact chunk or a 404, never a partial or wrong chunk.
    /// </summary>
    [Fact]
    public async Task APeerRequestRacingTheChunksEvictionGetsTheExactChunkOr404()
    {
        _model.Add("a.bin", 6 << 20, 83).Add("b.bin", 6 << 20, 84);
        string manifest = await _model.PublishAsync(s3, "fleetrace", chunkSize: 1 << 20);
        var aChunks = ManifestLoader.Load(manifest).Files!.Single(f => f.Path == "a.bin").Chunks!;
        await StartNodeAsync(0, manifest, true, "--cache-size", "9M", "--no-passthrough");
        var peer = new IPEndPoint(_net.Nodes[0].Address, PeerPort);
        using var http = new HttpClient();
        int exact = 0, notFound = 0;
        for (int round = 0; round < 4; round++)
        {
            // a is read (and held), then b is read while peers ask for a's chunks: b's chunks evict a's.
            foreach (string file in new[] { "a.bin", "b.bin" })
            {
                string path = Path.Combine(MountPoint(0), file);
                if (file == "a.bin") { Assert.Equal(0, Check.WrongBytes(_model.Files[file], await ReadUncachedByKernelAsync(path))); continue; }
                var reading = ReadUncachedByKernelAsync(path);
                while (!reading.IsCompleted)
                    for (int c = 0; c < aChunks.Count; c++)
                    {
                        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{peer}/v1/chunks/blake3/{aChunks[c]}");
                        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", _token);
                        using var response = await http.SendAsync(request);
                        byte[] body = await response.Content.ReadAsByteArrayAsync();
                        if ((int)response.StatusCode == 404 && body.Length == 0) { notFound++; continue; }
                        Assert.Equal(200, (int)response.StatusCode);
                        Assert.True(_model.Files["a.bin"].AsSpan(c << 20, 1 << 20).SequenceEqual(body), $"chunk {c} of a.bin served wrong ({body.Length} bytes)");
                        exact++;
                    }
                Assert.Equal(0, Check.WrongBytes(_model.Files[file], await reading));
            }
        }
        var status = await StatusAsync(0, MountPoint(0));
        output.WriteLine($"{exact} exact chunks, {notFound} 404s; {status.GetProperty("chunks_evicted").GetInt64()} chunks evicted");
        Assert.True(status.GetProperty("chunks_evicted").GetInt64() > 0);
        Assert.True(exact > 0, "no request found a's chunks held");
    }

    /// <summary>Reads a file through the daemon: the kernel's page cache of it is dropped first.</summary>
    private static Task<byte[]> ReadUncachedByKernelAsync(string path) => Task.Run(() =>
    {
        MountProcessTestBase.DropPageCache(path);
        return File.ReadAllBytes(path);
    });

    /// <summary>
    /// One node holds the model under a SHA-256 manifest; another reads the same bytes under a BLAKE3
    /// manifest, and a third under a manifest that says BLAKE3 but lists the SHA-256 digests, with the first
    /// node planted as the holder of every chunk it names. No chunk crosses from one algorithm to the other.
    /// </summary>
    [Fact]
    public async Task NodesWithSha256AndBlake3ManifestsOfOneModelShareNoChunk()
    {
        _model.Add("model.safetensors", (5 << 20) + 11, 91);
        string bucket = await s3.CreateBucketAsync("fleethash");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string sha = await _model.WriteManifestAsync($"s3://{bucket}/m", chunkHash: MlArtifactFs.Cache.ChunkHashAlgorithm.Sha256);
        string b3 = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v1-blake3");
        var confused = ManifestLoader.Load(sha);
        confused.ChunkHash = "blake3";
        string confusedPath = Path.Combine(_model.ManifestFolder, "confused.json");
        await File.WriteAllTextAsync(confusedPath, ManifestLoader.Serialize(confused));
        var bytes = _model.Files["model.safetensors"];

        await StartNodeAsync(0, sha);
        Assert.Equal(0, Check.WrongBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"))));
        await StartNodeAsync(1, b3);
        Assert.Equal(0, Check.WrongBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(MountPoint(1), "model.safetensors"))));
        var node0 = new IPEndPoint(_net.Nodes[0].Address, PeerPort).ToString();
        await SetHoldersAsync(ChunkIds(confusedPath), add: [node0]); // "blake3:<a SHA-256 digest>": node 0 holds no such chunk
        await StartNodeAsync(2, confusedPath);
        bool failed = false;
        try { await File.ReadAllBytesAsync(Path.Combine(MountPoint(2), "model.safetensors")); }
        catch (IOException) { failed = true; }

        var status1 = await StatusAsync(1, MountPoint(1));
        var status2 = await StatusAsync(2, MountPoint(2));
        output.WriteLine($"BLAKE3 node: {status1.GetProperty("bytes_from_peers").GetInt64()} bytes from peers, {status1.GetProperty("bytes_fetched").GetInt64()} from storage; " +
                         $"confused node: read failed {failed}, {status2.GetProperty("bytes_from_peers").GetInt64()} bytes from peers");
        Assert.Equal(0, status1.GetProperty("bytes_from_peers").GetInt64());
        Assert.Equal(bytes.Length, status1.GetProperty("bytes_fetched").GetInt64());
        Assert.True(failed, "a manifest whose BLAKE3 chunk list holds SHA-256 digests must not read");
        Assert.Equal(0, status2.GetProperty("bytes_from_peers").GetInt64());
    }

    [Fact]
    public async Task HolderEntriesThatAreNotPeerAddressesAreIgnoredWithoutConnecting()
    {
        _model.Add("model.safetensors", (3 << 20) + 1, 71);
        string manifest = await _model.PublishAsync(s3, "fleetplanted", chunkSize: 1 << 20);
        var chunks = ChunkIds(manifest);
        // The metadata service, link-local addresses, names and junk: refused before any connection is made.
        await SetHoldersAsync(chunks, add: ["169.254.169.254:80", "[fe80::1]:7070", "[fd00:ec2::254]:80", "metadata.google.internal:80", "not an address", "10.0.0.1"]);
        await StartNodeAsync(0, manifest);
        var read = await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"));
        Assert.Equal(0, Check.WrongBytes(_model.Files["model.safetensors"], read));
        var status = await StatusAsync(0, MountPoint(0));
        long ignored = status.GetProperty("fleet").GetProperty("ignored_holder_entries").GetInt64();
        output.WriteLine($"{ignored} planted holder entries ignored; peer failures {status.GetProperty("peer_failures").GetInt64()}");
        Assert.True(ignored >= 6 * chunks.Count, $"only {ignored} planted entries were ignored");
        Assert.Equal(0, status.GetProperty("peer_failures").GetInt64()); // none was ever tried
    }

    /// <summary>Reads the file through node <paramref name="node"/> in 1 MiB steps; after <paramref name="after"/> bytes, runs <paramref name="disturb"/> and reads on.</summary>
    private async Task<long> ReadWhileAsync(int node, byte[] expected, long after, Func<Task> disturb)
    {
        var read = new byte[expected.Length];
        await using var stream = new FileStream(Path.Combine(MountPoint(node), "model.safetensors"), FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.None);
        int got = 0;
        bool disturbed = false;
        while (got < read.Length)
        {
            int n = await stream.ReadAsync(read.AsMemory(got, Math.Min(1 << 20, read.Length - got)));
            if (n == 0) break;
            got += n;
            if (!disturbed && got >= after)
            {
                disturbed = true;
                await disturb();
            }
        }
        Assert.True(disturbed, "the read ended before the disturbance");
        return Check.WrongBytes(expected, read[..got]);
    }

    [Fact]
    public async Task ThePeerServerAnswersOnlyTheTokenAndOnlyWithVerifiedChunks()
    {
        _model.Add("model.safetensors", (6 << 20) + 5, 41);
        string manifest = await _model.PublishAsync(s3, "fleetsec", chunkSize: 1 << 20);
        var file = ManifestLoader.Load(manifest).Files!.Single();
        var bytes = _model.Files["model.safetensors"];
        await StartNodeAsync(0, manifest);
        Assert.Equal(0, Check.WrongBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(MountPoint(0), "model.safetensors"))));
        var peer = new IPEndPoint(_net.Nodes[0].Address, PeerPort);
        string held = $"blake3/{file.Chunks![1]}", heldId = ChunkIds(manifest)[1];

        using var http = new HttpClient();
        async Task<(int Status, byte[] Body)> GetAsync(string path, string? token, string? range = null)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{peer}{path}");
            if (token is not null) request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
            if (range is not null) request.Headers.Range = System.Net.Http.Headers.RangeHeaderValue.Parse(range);
            using var response = await http.SendAsync(request);
            return ((int)response.StatusCode, await response.Content.ReadAsByteArrayAsync());
        }

        var noToken = await GetAsync($"/v1/chunks/{held}", null);
        var wrongToken = await GetAsync($"/v1/chunks/{held}", _token + "x");
        Assert.Equal((401, 0), (noToken.Status, noToken.Body.Length));
        Assert.Equal((401, 0), (wrongToken.Status, wrongToken.Body.Length));
        Assert.Equal(400, (await GetAsync("/v1/chunks/not-a-sha", _token)).Status);
        Assert.Equal(400, (await GetAsync($"/v1/chunks/{held.ToUpperInvariant()}", _token)).Status);
        Assert.Equal(400, (await GetAsync($"/v1/chunks/md5/{file.Chunks[1]}", _token)).Status);
        Assert.Equal(404, (await GetAsync($"/v1/chunks/sha256/{file.Chunks[1]}", _token)).Status); // the same digest under another algorithm names nothing held
        Assert.Equal(404, (await GetAsync("/etc/passwd", _token)).Status);
        Assert.Equal(404, (await GetAsync($"/v1/blobs/{held}", _token)).Status);
        Assert.Equal(404, (await GetAsync($"/v1/chunks/{new string('0', 64)}", _token)).Status); // not held
        var whole = await GetAsync($"/v1/chunks/{held}", _token);
        Assert.Equal(200, whole.Status);
        Assert.Equal(bytes.AsSpan(1 << 20, 1 << 20).ToArray(), whole.Body);
        var part = await GetAsync($"/v1/chunks/{held}", _token, "bytes=100-199");
        Assert.Equal(206, part.Status);
        Assert.Equal(bytes.AsSpan((1 << 20) + 100, 100).ToArray(), part.Body);

        // A held chunk damaged on disk is never sent: the server hashes it against its id first.
        string data = Directory.EnumerateFiles(Path.Combine(_work.FullName, "cache-0"), "c-*.data", SearchOption.AllDirectories).Single();
        using (var handle = File.OpenHandle(data, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.Write(handle, new byte[] { (byte)(bytes[(2 << 20) + 10] ^ 1) }, (2 << 20) + 10);
        var damaged = await GetAsync($"/v1/chunks/blake3/{file.Chunks[2]}", _token);
        Assert.Equal((404, 0), (damaged.Status, damaged.Body.Length));

        // It listens only where told: node 0 (on its bridge address) not on its loopback; node 1, told
        // 127.0.0.1, answers there and not on its bridge address.
        var loopback = await Repo.RunAsync("ip", ["netns", "exec", _net.Nodes[0].Namespace, "bash", "-c", $"exec 3<>/dev/tcp/127.0.0.1/{PeerPort}"]);
        Assert.NotEqual(0, loopback.ExitCode);
        await StartNodeAsync(1, manifest, false, "--peer-listen", $"127.0.0.1:{PeerPort}");
        var inside = await Repo.RunAsync("ip", ["netns", "exec", _net.Nodes[1].Namespace, "bash", "-c", $"exec 3<>/dev/tcp/127.0.0.1/{PeerPort}"]);
        Assert.True(inside.ExitCode == 0, "node 1 does not listen where it was told: " + inside.Stderr);
        using var probe = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await Assert.ThrowsAnyAsync<SocketException>(() => probe.ConnectAsync(new IPEndPoint(_net.Nodes[1].Address, PeerPort)));

        var status = await StatusAsync(0, MountPoint(0));
        output.WriteLine($"401s counted {status.GetProperty("fleet").GetProperty("unauthorized_requests").GetInt64()}, chunks served {status.GetProperty("fleet").GetProperty("chunks_served").GetInt64()}");

        // A node that stops cleanly takes itself out of the holders index at once (not after the TTL).
        using (var redis = await ConnectionMultiplexer.ConnectAsync(_redis.ConnectionString))
        {
            var db = redis.GetDatabase();
            Assert.NotNull(await db.SortedSetScoreAsync(HoldersKey(heldId), peer.ToString()));
            Assert.Equal(0, (await Repo.RunAsync("kill", ["-TERM", _nodes[0].Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])).ExitCode);
            await _nodes[0].Process.WaitForExitAsync();
            Assert.Null(await db.SortedSetScoreAsync(HoldersKey(heldId), peer.ToString()));
        }
        Assert.Equal(2, status.GetProperty("fleet").GetProperty("unauthorized_requests").GetInt64());
    }
}
