using MlArtifactFs.Telemetry;
using MlArtifactFs.Cache;
using MlArtifactFs.Fuse;
using MlArtifactFs.Manifest;
using Mlfs.Tests.Infrastructure;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// The cache's promise under sharing, on real mounts, the real local S3 server and a real
/// redis-server: a byte is served for a manifest only if it verified against a hash that manifest
/// lists, whatever another manifest, process or index entry put in the shared cache directory.
/// Each test prints what it injected and how many wrong bytes each mount served.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class CacheIntegrityTests(S3Fixture s3, RedisFixture redis, ITestOutputHelper output) : IDisposable
{
    private const int Chunk = 1 << 20;
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-integrity-");
    private readonly List<TestModel> _models = [];

    public void Dispose()
    {
        foreach (var model in _models) model.Dispose();
        foreach (var dir in _work.EnumerateDirectories())
            if (FuseMounter.IsMountPoint(dir.FullName)) FuseMounter.TryUnmount(dir.FullName, lazy: true);
        _work.Delete(recursive: true);
    }

    private string Cache => Path.Combine(_work.FullName, "cache");

    private TestModel NewModel()
    {
        var model = new TestModel();
        _models.Add(model);
        return model;
    }

    private string NewMountPoint() => _work.CreateSubdirectory("mnt-" + Guid.NewGuid().ToString("N")[..8]).FullName;

    /// <summary>Drops the kernel's page cache, so the next read reaches the mount (or its passthrough file) again.</summary>
    private static void DropPageCache() => File.WriteAllText("/proc/sys/vm/drop_caches", "3");

    /// <summary>
    /// A manifest that claims <paramref name="honest"/>'s file (same path, size and sha256) but lists the
    /// chunks of other bytes and points at them: the lie a shared cache must survive.
    /// </summary>
    private async Task<(string Honest, string Forged, byte[] Truth, byte[] Other)> ForgeAsync(string bucketPrefix, ManifestKind kind)
    {
        var truth = NewModel().Add("model.safetensors", 6 * Chunk + 4321, 101);
        var other = NewModel().Add("model.safetensors", 6 * Chunk + 4321, 202);
        string honest = await truth.PublishAsync(s3, bucketPrefix + "-t", kind);
        string otherManifest = await other.PublishAsync(s3, bucketPrefix + "-o", kind);
        var forged = ManifestLoader.Load(otherManifest);
        forged.Files![0].Sha256 = ManifestLoader.Load(honest).Files![0].Sha256; // the claim nobody checks while chunks are served
        string forgedPath = Path.Combine(other.ManifestFolder, "forged.json");
        await File.WriteAllTextAsync(forgedPath, ManifestLoader.Serialize(forged));
        return (honest, forgedPath, truth.Files["model.safetensors"], other.Files["model.safetensors"]);
    }

    [Theory]
    [MemberData(nameof(ManifestKinds.All), MemberType = typeof(ManifestKinds))]
    public async Task AForgedManifestOnTheSameCacheCannotPlantBytesForTheHonestOne(ManifestKind kind)
    {
        bool seedFormat = kind == ManifestKind.Seed;
        var (honest, forged, truth, other) = await ForgeAsync("forge", kind);
        await using var liar = await InProcessMount.StartAsync(s3, forged, Cache);
        byte[]? liarRead = null;
        try { liarRead = await File.ReadAllBytesAsync(liar["model.safetensors"]); }
        catch (IOException) { } // seed format: the whole-file check fails at the end and the read gets EIO
        if (!seedFormat) Check.SameBytes(other, liarRead!, "the forged manifest's own (verified) chunks");

        // The honest manifest, mounted on the same cache while the liar is still mounted.
        await using var mount = await InProcessMount.StartAsync(s3, honest, Cache);
        var read = await File.ReadAllBytesAsync(mount["model.safetensors"]);
        long wrong = Check.WrongBytes(truth, read);
        output.WriteLine($"forged {kind} manifest: liar read {liarRead?.Length ?? 0} bytes " +
                         $"(unverified served {liar.Mount.Stats[Counters.UnverifiedBytesServed]}); honest mount fetched {mount.Mount.Stats[Counters.BytesFetched]} bytes, {wrong} wrong");
        Assert.Equal(0, wrong);
        Assert.True(mount.Mount.Stats[Counters.BytesFetched] >= truth.Length, "the honest manifest fetched its own bytes");
        Assert.Empty(CacheCheck.Run(Cache).Damaged);
    }

    [Theory]
    [MemberData(nameof(ManifestKinds.All), MemberType = typeof(ManifestKinds))]
    public async Task AForgedManifestCannotPlantBytesAcrossASwitchInOneMount(ManifestKind kind)
    {
        var (honest, forged, truth, _) = await ForgeAsync("forgesw", kind);
        await using var mount = await InProcessMount.StartAsync(s3, forged, Cache);
        try { await File.ReadAllBytesAsync(mount["model.safetensors"]); }
        catch (IOException) { } // seed format: fails its whole-file check
        long before = mount.Mount.Stats[Counters.BytesFetched];
        await mount.Mount.SwitchAsync(honest);
        var read = await File.ReadAllBytesAsync(mount["model.safetensors"]);
        long wrong = Check.WrongBytes(truth, read);
        output.WriteLine($"switch from a forged {kind} manifest: {mount.Mount.Stats[Counters.BytesFetched] - before} bytes fetched after the switch, {wrong} wrong");
        Assert.Equal(0, wrong);
        Assert.True(mount.Mount.Stats[Counters.BytesFetched] - before >= truth.Length, "fetched again after the switch");
    }

    public static TheoryData<ProxyFault, ManifestKind, bool> LateFaults()
    {
        var data = new TheoryData<ProxyFault, ManifestKind, bool>();
        foreach (var fault in new[] { ProxyFault.FlippedByte, ProxyFault.TruncatedBody, ProxyFault.ShiftedBody })
            foreach (var kind in new[] { ManifestKind.Blake3, ManifestKind.Sha256, ManifestKind.Seed })
                foreach (bool withRedis in new[] { false, true })
                    data.Add(fault, kind, withRedis);
        return data;
    }

    /// <summary>
    /// Mount A's body is held, then B verifies the same chunks, then A's corrupt, truncated or shifted
    /// body arrives. Nothing of A's may reach the shared file: B (after the page cache is dropped) and a
    /// third mount read exact bytes, and a full check of the cache finds every recorded chunk intact.
    /// </summary>
    [Theory]
    [MemberData(nameof(LateFaults))]
    public async Task ABadBodyArrivingAfterAnotherMountVerifiedTheChunkChangesNothingForIt(ProxyFault fault, ManifestKind kind, bool withRedis)
    {
        bool seedFormat = kind == ManifestKind.Seed;
        var model = NewModel().Add("weights.bin", 4 * Chunk + 777, 303);
        byte[] expected = model.Files["weights.bin"];
        string manifest = await model.PublishAsync(s3, "late", kind);
        string[] redisArgs = withRedis ? ["--redis", redis.ConnectionString] : [];
        await using var proxyA = new FaultProxy(s3.Endpoint) { Faults = (n, _) => n == 1 ? fault : ProxyFault.None, PauseAfter = 64 << 10 };
        string a = NewMountPoint(), b = NewMountPoint(), c = NewMountPoint();
        await using var mountA = await MountProcess.StartAsync(_work.FullName, manifest, a, Cache, s3.Environment(endpoint: proxyA.Endpoint), true, redisArgs);
        await using var mountB = await MountProcess.StartAsync(_work.FullName, manifest, b, Cache, s3.Environment(), true, redisArgs);

        var readA = Task.Run(() => File.ReadAllBytes(Path.Combine(a, "weights.bin")));
        await proxyA.Paused.Task.WaitAsync(TimeSpan.FromMinutes(1)); // A's GET is in flight, its bad body held back
        if (withRedis) await DropLeasesAsync(); // as if A's leases had expired while it was slow: B fetches for itself
        byte[] firstB = await File.ReadAllBytesAsync(Path.Combine(b, "weights.bin"));
        Assert.Equal(0, Check.WrongBytes(expected, firstB));

        proxyA.Release.SetResult(); // now A's bad body arrives
        byte[]? bytesA = null;
        try { bytesA = await readA.WaitAsync(TimeSpan.FromMinutes(2)); }
        catch (IOException) when (seedFormat) { } // a file without chunk hashes fails its whole-file check: EIO for A only

        DropPageCache();
        byte[] againB = await File.ReadAllBytesAsync(Path.Combine(b, "weights.bin"));
        await using var mountC = await MountProcess.StartAsync(_work.FullName, manifest, c, Cache, s3.Environment(), true, redisArgs);
        byte[] readC = await File.ReadAllBytesAsync(Path.Combine(c, "weights.bin"));
        var check = CacheCheck.Run(Cache);

        long wrongA = bytesA is null ? -1 : Check.WrongBytes(expected, bytesA), wrongB = Check.WrongBytes(expected, againB), wrongC = Check.WrongBytes(expected, readC);
        output.WriteLine($"{fault}, {kind}, {(withRedis ? "Redis" : "no Redis")}: " +
                         $"{proxyA.FaultsInjected} fault(s) injected in {proxyA.Gets} GETs of A; wrong bytes served: A {(bytesA is null ? "none (EIO)" : wrongA)}, " +
                         $"B {wrongB}, C {wrongC}; cache check: {check.ChunksChecked} chunk(s), {check.Damaged.Count} damaged");
        Assert.Equal(1, proxyA.FaultsInjected);
        Assert.Equal(0, wrongB);
        Assert.Equal(0, wrongC);
        if (!seedFormat) Assert.Equal(0, wrongA); // chunked: A's bad chunk failed its hash and was fetched again
        Assert.Empty(check.Damaged);
        Assert.True(check.ChunksChecked > 0);
    }

    /// <summary>Deletes every fetch lease in Redis: what a holder that outlived its lease's TTL looks like to others.</summary>
    private async Task DropLeasesAsync()
    {
        await using var connection = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString);
        var server = connection.GetServer(connection.GetEndPoints()[0]);
        await foreach (var key in server.KeysAsync(pattern: "mlfs:*:lease:*")) await connection.GetDatabase().KeyDeleteAsync(key);
    }

    /// <summary>
    /// Four processes read the same cold files at once on one cache (two with Redis, two without), two of
    /// them through proxies that corrupt every other GET. Every byte served in every process is exact, and
    /// the cache holds only intact chunks afterwards.
    /// </summary>
    [Theory]
    [MemberData(nameof(ManifestKinds.Chunked), MemberType = typeof(ManifestKinds))]
    public async Task FourProcessesOnOneCacheWithFaultsServeNoWrongByte(ManifestKind kind)
    {
        var model = NewModel().Add("a.bin", 12 * Chunk + 5, 401).Add("b.bin", 9 * Chunk + 17, 402);
        string manifest = await model.PublishAsync(s3, "four", kind);
        var faults = new[] { ProxyFault.None, ProxyFault.FlippedByte, ProxyFault.None, ProxyFault.ShiftedBody };
        var proxies = new List<FaultProxy>();
        var mounts = new List<(MountProcess Process, string MountPoint)>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var fault = faults[i];
                var proxy = new FaultProxy(s3.Endpoint) { Faults = (n, _) => n % 2 == 1 ? fault : ProxyFault.None };
                proxies.Add(proxy);
                string mp = NewMountPoint();
                string[] extra = i < 2 ? ["--redis", redis.ConnectionString] : [];
                mounts.Add((await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(endpoint: proxy.Endpoint), true, extra), mp));
            }
            var reads = mounts.SelectMany(m => new[] { "a.bin", "b.bin" }.Select(f => (File: f, Task: Task.Run(() => File.ReadAllBytes(Path.Combine(m.MountPoint, f)))))).ToList();
            var results = await Task.WhenAll(reads.Select(r => r.Task)).WaitAsync(TimeSpan.FromMinutes(3));
            long[] wrong = new long[4];
            for (int i = 0; i < reads.Count; i++) wrong[i / 2] += Check.WrongBytes(model.Files[reads[i].File], results[i]);
            DropPageCache();
            foreach (var (_, mp) in mounts)
                foreach (var f in new[] { "a.bin", "b.bin" })
                    Assert.Equal(0, Check.WrongBytes(model.Files[f], await File.ReadAllBytesAsync(Path.Combine(mp, f))));
            var check = CacheCheck.Run(Cache);
            output.WriteLine($"4 processes, {kind}: faults injected {string.Join(", ", proxies.Select((p, i) => $"{faults[i]} x{p.FaultsInjected}"))}; " +
                             $"bytes from S3 {string.Join(", ", proxies.Select(p => p.BytesSent))}; wrong bytes served {string.Join(", ", wrong)}; " +
                             $"cache check: {check.ChunksChecked} chunk(s) in {check.Blobs} blob(s), {check.Damaged.Count} damaged");
            Assert.All(wrong, w => Assert.Equal(0, w));
            Assert.True(proxies.Sum(p => p.FaultsInjected) > 0, "some GETs were corrupted"); // which process fetches what is a race; the faults must land somewhere
            Assert.Empty(check.Damaged);
            Assert.Equal(13 + 10, check.ChunksChecked); // every chunk of both files is recorded, and intact
        }
        finally
        {
            foreach (var (process, _) in mounts) await process.DisposeAsync();
            foreach (var proxy in proxies) await proxy.DisposeAsync();
        }
    }

    /// <summary>
    /// kill -9 of one of two processes sharing a cache while its GETs are mid-body: the other keeps
    /// serving exact bytes, the cache holds only intact chunks, and a restart adopts them and reads exactly.
    /// </summary>
    [Theory]
    [MemberData(nameof(ManifestKinds.Chunked), MemberType = typeof(ManifestKinds))]
    public async Task KillNineOfOneSharingProcessMidWriteLeavesTheOtherExactAndTheCacheIntact(ManifestKind kind)
    {
        var model = NewModel().Add("weights.bin", 24 * Chunk + 99, 501);
        byte[] expected = model.Files["weights.bin"];
        string manifest = await model.PublishAsync(s3, "kill", kind);
        await using var proxyA = new FaultProxy(s3.Endpoint) { PauseAfter = 5L * Chunk + 12345 }; // every GET of A stops mid-chunk
        string a = NewMountPoint(), b = NewMountPoint(), a2 = NewMountPoint();
        var mountA = await MountProcess.StartAsync(_work.FullName, manifest, a, Cache, s3.Environment(endpoint: proxyA.Endpoint));
        await using var mountB = await MountProcess.StartAsync(_work.FullName, manifest, b, Cache, s3.Environment());
        long served;
        try
        {
            var readA = Task.Run(() => { try { File.ReadAllBytes(Path.Combine(a, "weights.bin")); } catch (IOException) { } });
            await proxyA.Paused.Task.WaitAsync(TimeSpan.FromMinutes(1));
            var readB = Task.Run(() => File.ReadAllBytes(Path.Combine(b, "weights.bin")));
            served = proxyA.BytesSent;
            mountA.Process.Kill(); // SIGKILL, with A's writes in flight
            await mountA.Process.WaitForExitAsync();
            Assert.Equal(0, Check.WrongBytes(expected, await readB.WaitAsync(TimeSpan.FromMinutes(2))));
            FuseMounter.TryUnmount(a, lazy: true);
            await readA.WaitAsync(TimeSpan.FromMinutes(1));
        }
        finally { await mountA.DisposeAsync(); }

        DropPageCache();
        long wrongB = Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(b, "weights.bin")));
        var check = CacheCheck.Run(Cache);
        await using var restarted = await MountProcess.StartAsync(_work.FullName, manifest, a2, Cache, s3.Environment());
        long wrongRestart = Check.WrongBytes(expected, await File.ReadAllBytesAsync(Path.Combine(a2, "weights.bin")));
        output.WriteLine($"kill -9 ({kind}) after A was served {served} bytes: B wrong bytes {wrongB}; restart wrong bytes {wrongRestart}; " +
                         $"cache check: {check.ChunksChecked} chunk(s), {check.Damaged.Count} damaged");
        Assert.Equal(0, wrongB);
        Assert.Equal(0, wrongRestart);
        Assert.Empty(check.Damaged);
    }
}
