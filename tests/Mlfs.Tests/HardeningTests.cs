using System.Security.Cryptography;
using System.Text;
using MlArtifactFs.Fuse;
using Mlfs.Tests.Infrastructure;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// What is not ours is input: paths another user could have prepared, entries planted in Redis,
/// error bodies of any size, any number of cached files at the largest chunk size. Real processes,
/// the real S3 server, a real redis-server.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class HardeningTests(S3Fixture s3, RedisFixture redis, ITestOutputHelper output) : MountProcessTestBase("mlfs-harden-")
{
    private const int Chunk = 1 << 20;

    [Fact]
    public async Task APlantedSymlinkAtTheReadyFileIsReplacedNeverWrittenThrough()
    {
        _model.Add("config.json", 100, 1);
        string manifest = await _model.PublishAsync(s3, "ready");
        string victim = Path.Combine(_work.FullName, "victim"), victimTmp = Path.Combine(_work.FullName, "victim-tmp");
        File.WriteAllText(victim, "precious");
        File.WriteAllText(victimTmp, "precious too");
        string ready = Path.Combine(_work.FullName, "ready");
        File.CreateSymbolicLink(ready, victim);             // the name itself
        File.CreateSymbolicLink(ready + ".tmp", victimTmp); // and the temporary name earlier versions used
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, NewMountPoint(), Cache, s3.Environment(), ready);
        Assert.Equal("precious", File.ReadAllText(victim));
        Assert.Equal("precious too", File.ReadAllText(victimTmp));
        Assert.Null(File.ResolveLinkTarget(ready, false));
        Assert.StartsWith("mlfs: ready:", File.ReadAllText(ready));
    }

    /// <summary>
    /// Redis entries anyone could write: a chunk location with a negative index, a huge one, a path that is
    /// not a blob name, and a fetch lease without a TTL on a chunk the mount needs. The read is exact, does
    /// not wait for the planted lease, and every bad entry is counted.
    /// </summary>
    [Theory]
    [MemberData(nameof(ManifestKinds.Chunked), MemberType = typeof(ManifestKinds))]
    public async Task PlantedRedisEntriesAreIgnoredAndCountedAndTheReadIsExact(ManifestKind kind)
    {
        _model.Add("weights.bin", 3 * Chunk, 2);
        string manifest = await _model.PublishAsync(s3, "planted", kind);
        var bytes = _model.Files["weights.bin"];
        // The index names chunks by id (algorithm:digest), as the mount looks them up.
        string[] chunkIds = [.. MlArtifactFs.Manifest.ManifestLoader.Load(manifest).Files![0].Chunks!.Select(hex => $"{(kind == ManifestKind.Sha256 ? "sha256" : "blake3")}:{hex}")];
        string ns = "mlfs:" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Path.GetFullPath(Cache))))[..12] + ":";
        await using (var connection = await ConnectionMultiplexer.ConnectAsync(redis.ConnectionString))
        {
            var db = connection.GetDatabase();
            await db.HashSetAsync(ns + "chunk:" + chunkIds[0],
                [new("c-" + new string('0', 64), -5), new("../../../../etc/shadow", 0), new("c-" + new string('1', 64), "99999999999")]);
            // A lease with no TTL on every chunk of the blob (its name is the chunk-list id, which the test can compute too).
            foreach (var key in LeaseKeys(manifest)) await db.StringSetAsync(ns + "lease:" + key, "someone-else");
        }
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(), true, "--redis", redis.ConnectionString);
        var read = await File.ReadAllBytesAsync(Path.Combine(mp, "weights.bin"));
        Check.SameBytes(bytes, read, "weights.bin with planted Redis entries");
        var status = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mp]);
        Assert.True(status.ExitCode == 0, status.Stderr);
        var json = System.Text.Json.JsonDocument.Parse(status.Stdout).RootElement;
        long ignored = json.GetProperty("ignored_index_entries").GetInt64();
        long waited = json.GetProperty("chunks_from_other_processes").GetInt64();
        output.WriteLine($"planted: 3 chunk locations and 3 leases without TTL; ignored {ignored}, chunks waited for {waited}, wrong bytes 0");
        Assert.True(ignored >= 4, $"{ignored} entries ignored"); // 3 leases + at least the unparsable location (the others are refused by the cache)
        Assert.Equal(0, waited); // a lease without a TTL holds nobody back
    }

    private static string[] LeaseKeys(string manifestPath)
    {
        var manifest = MlArtifactFs.Manifest.ManifestLoader.Load(manifestPath);
        var f = manifest.Files![0];
        var d = new MlArtifactFs.Cache.BlobDescriptor(f.Sha256!, f.Size!.Value, manifest.EffectiveChunkSize, f.Chunks, manifest.ChunkHashAlgorithm);
        return [.. Enumerable.Range(0, d.ChunkCount).Select(c => $"{d.Name}:{c}")];
    }

    /// <summary>A 500 whose body is 1 GiB: the daemon reads a bounded part of it, retries, and serves exact bytes in bounded memory.</summary>
    [Fact]
    public async Task AnErrorWithAOneGigabyteBodyIsReadOnlyInPartAndRetried()
    {
        _model.Add("weights.bin", 4 * Chunk, 3);
        string manifest = await _model.PublishAsync(s3, "hugeerr");
        await using var proxy = new FaultProxy(s3.Endpoint) { Faults = (n, _) => n == 1 ? ProxyFault.HugeErrorBody : ProxyFault.None };
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(endpoint: proxy.Endpoint));
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(Path.Combine(mp, "weights.bin")), "weights.bin after a 1 GiB error body");
        long rss = mount.PeakRss();
        output.WriteLine($"1 GiB error body: {proxy.ErrorBodyBytes} bytes of it sent before the daemon hung up; daemon peak RSS {rss >> 20} MiB");
        Assert.Equal(1, proxy.FaultsInjected);
        Assert.True(proxy.ErrorBodyBytes < 64L << 20, $"{proxy.ErrorBodyBytes} bytes of the error body were taken");
        Assert.True(rss < 256L << 20, $"peak RSS {rss >> 20} MiB");
    }

    /// <summary>
    /// Sixteen files cached at the largest chunk size (64 MiB), opened at once by a restarted mount: every
    /// chunk is re-hashed before it is served, in bounded memory (the README's bound: 256 MiB).
    /// </summary>
    [Fact]
    public async Task SixteenCachedFilesAtTheLargestChunkSizeOpenAtOnceInBoundedMemory()
    {
        const int chunkSize = 64 << 20;
        for (int i = 0; i < 16; i++) _model.Add($"shard-{i:D2}.bin", chunkSize, 100 + i);
        string manifest = await _model.PublishAsync(s3, "bigchunk", chunkSize: chunkSize);
        string mp = NewMountPoint();
        await using (var first = await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(), true, "--no-passthrough"))
        {
            await Task.WhenAll(_model.Files.Keys.Select(f => Task.Run(() => File.ReadAllBytes(Path.Combine(mp, f)).Length)));
            output.WriteLine($"first mount (cold, 16 x 64 MiB): peak RSS {first.PeakRss() >> 20} MiB");
            // Reads are answered from the verified buffer before its write lands: wait until all 16 are stored
            // (chunks_fetched counts stored chunks) before the process is killed.
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (true)
            {
                var stored = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mp]);
                if (System.Text.Json.JsonDocument.Parse(stored.Stdout).RootElement.GetProperty("chunks_fetched").GetInt64() >= 16) break;
                Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), "the first mount never stored all 16 chunks");
                await Task.Delay(20);
            }
        }
        FuseMounter.TryUnmount(mp, lazy: true);
        string mp2 = NewMountPoint();
        await using var again = await MountProcess.StartAsync(_work.FullName, manifest, mp2, Cache, s3.Environment(), true, "--no-passthrough");
        var handles = _model.Files.Keys.Select(f => File.OpenHandle(Path.Combine(mp2, f))).ToList();
        try
        {
            var reads = handles.Select((h, i) => Task.Run(() =>
            {
                var buffer = new byte[1 << 20];
                int n = RandomAccess.Read(h, buffer, 32L << 20);
                return _model.Files[$"shard-{i:D2}.bin"].AsSpan(32 << 20, n).SequenceEqual(buffer.AsSpan(0, n));
            })).ToArray();
            Assert.All(await Task.WhenAll(reads), Assert.True);
        }
        finally { foreach (var h in handles) h.Dispose(); }
        long rss = again.PeakRss();
        var status = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mp2]);
        long fetched = System.Text.Json.JsonDocument.Parse(status.Stdout).RootElement.GetProperty("bytes_fetched").GetInt64();
        output.WriteLine($"restarted mount, 16 cached 64 MiB chunks opened at once: peak RSS {rss >> 20} MiB, {fetched} bytes fetched");
        Assert.Equal(0, fetched);
        Assert.True(rss < 256L << 20, $"peak RSS {rss >> 20} MiB");
    }

    /// <summary>Every switch builds a tree; a tree no longer current is freed once the kernel has forgotten its nodes.</summary>
    [Fact]
    public async Task TreesOfEarlierVersionsAreFreedOnceTheKernelForgetsTheirNodes()
    {
        _model.Add("config.json", 100, 5).Add("sub/a.bin", 5000, 6);
        string v1 = await _model.PublishAsync(s3, "trees1");
        byte[] v1Config = _model.Files["config.json"];
        _model.Add("config.json", 120, 7);
        string v2 = await _model.PublishAsync(s3, "trees2");
        await using var mount = await InProcessMount.StartAsync(s3, v1, Cache);
        for (int i = 0; i < 6; i++)
        {
            await mount.Mount.SwitchAsync(i % 2 == 0 ? v2 : v1);
            await File.ReadAllBytesAsync(mount["config.json"]);
            await File.ReadAllBytesAsync(mount["sub/a.bin"]);
        }
        int held = mount.Mount.FileSystem.TreesHeld;
        // Dropping dentries and inodes makes the kernel FORGET every node nothing uses: wait for that, bounded.
        await Check.EventuallyAsync(() =>
        {
            if (mount.Mount.FileSystem.TreesHeld <= 1) return true;
            File.WriteAllText("/proc/sys/vm/drop_caches", "2");
            return false;
        });
        output.WriteLine($"7 trees built; {held} held before the kernel forgot, {mount.Mount.FileSystem.TreesHeld} after");
        Assert.Equal(1, mount.Mount.FileSystem.TreesHeld);
        Check.SameBytes(v1Config, await File.ReadAllBytesAsync(mount["config.json"]), "config.json (v1, current) after the old trees went");
    }
}
