using MlArtifactFs.Telemetry;
using System.Diagnostics;
using MlArtifactFs.Fuse;
using MlArtifactFs.Index;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>The shared cache: dedup across versions, two processes on one cache, Redis coming and going.</summary>
[Collection(S3Collection.Name)]
public sealed class SharedCacheTests(S3Fixture s3, RedisFixture redis) : MountProcessTestBase("mlfs-shared-")
{
    private const int Chunk = 1 << 20;

    [Fact]
    public async Task IdenticalChunksAcrossVersionsAreCopiedNotFetched()
    {
        _model.Add("model.safetensors", 8 * Chunk, 1);
        string bucket = await s3.CreateBucketAsync("dedup");
        await s3.UploadFolderAsync(bucket, "v1", _model.Folder);
        string v1 = await _model.WriteManifestAsync($"s3://{bucket}/v1", version: "v1");
        var v2Bytes = (byte[])_model.Files["model.safetensors"].Clone();
        for (int i = 0; i < 100; i++) v2Bytes[5 * Chunk + 1000 + i] ^= 0x55; // fine-tuned: one chunk of eight differs
        _model.Add("model.safetensors", v2Bytes);
        await s3.UploadFolderAsync(bucket, "v2", _model.Folder);
        string v2 = await _model.WriteManifestAsync($"s3://{bucket}/v2", version: "v2");

        await using var mount = await InProcessMount.StartAsync(s3, v1, Cache);
        await File.ReadAllBytesAsync(mount["model.safetensors"]);
        long before = mount.Mount.Stats[Counters.BytesFetched];
        await mount.Mount.SwitchAsync(v2);
        Check.SameBytes(v2Bytes, await File.ReadAllBytesAsync(mount["model.safetensors"]), "v2 through the mount");
        Assert.Equal(Chunk, mount.Mount.Stats[Counters.BytesFetched] - before); // only the changed chunk crossed the network
        Assert.Equal(7, mount.Mount.Stats[Counters.ChunksDeduplicated]);
    }

    [Fact]
    public async Task TwoMountProcessesOnOneCacheFetchEachColdChunkOnce()
    {
        _model.Add("weights.bin", 32 * Chunk, 2);
        string manifest = await _model.PublishAsync(s3, "twoproc");
        await using var proxy = new FaultProxy(s3.Endpoint);
        var env = s3.Environment(endpoint: proxy.Endpoint);
        string a = _work.CreateSubdirectory("a").FullName, b = _work.CreateSubdirectory("b").FullName;
        await using var first = await MountProcess.StartAsync(_work.FullName, manifest, a, Cache, env, true, "--redis", redis.ConnectionString);
        await using var second = await MountProcess.StartAsync(_work.FullName, manifest, b, Cache, env, true, "--redis", redis.ConnectionString);
        var reads = new[] { a, b }.Select(mp => Task.Run(() => File.ReadAllBytes(Path.Combine(mp, "weights.bin")))).ToArray();
        byte[][] results;
        try { results = await Task.WhenAll(reads).WaitAsync(TimeSpan.FromMinutes(2)); }
        catch (IOException e)
        {
            throw new IOException($"{e.Message}\nmlfs logs:\n{first.Stderr}\n{second.Stderr}", e);
        }
        foreach (var bytes in results) Check.SameBytes(_model.Files["weights.bin"], bytes, "weights.bin");
        Assert.True(proxy.BytesSent <= 32L * Chunk, $"{proxy.BytesSent} bytes fetched for a {32 * Chunk}-byte file read by two processes");
        long shared = 0;
        foreach (var mp in new[] { a, b })
        {
            var status = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mp]);
            Assert.True(status.ExitCode == 0, status.Stderr);
            shared += System.Text.Json.JsonDocument.Parse(status.Stdout).RootElement.GetProperty("chunks_from_other_processes").GetInt64();
        }
        Assert.True(shared > 0, "one process waited for chunks the other was fetching");
    }

    [Fact]
    public async Task RedisKilledDuringReadsChangesNothingAndTheIndexCatchesUpWhenItReturns()
    {
        _model.Add("weights.bin", 12 * Chunk, 3);
        string manifest = await _model.PublishAsync(s3, "redis");
        await using var mount = await InProcessMount.StartAsync(s3, manifest, Cache, redis: redis.ConnectionString);
        var index = Assert.IsType<RedisChunkIndex>(mount.Mount.Index);
        Assert.True(index.IsConnected);
        var expected = _model.Files["weights.bin"];
        try
        {
            using var handle = File.OpenHandle(mount["weights.bin"]);
            var buffer = new byte[Chunk];
            for (int c = 0; c < 12; c++)
            {
                if (c == 4) await redis.StopAsync(); // redis-server goes away mid-read
                int n = RandomAccess.Read(handle, buffer, (long)c * Chunk);
                Assert.Equal(Chunk, n);
                Assert.True(expected.AsSpan(c * Chunk, Chunk).SequenceEqual(buffer), $"chunk {c}");
            }
            Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
        }
        finally
        {
            await redis.StartAsync();
        }
        var sw = Stopwatch.StartNew();
        while (sw.Elapsed < TimeSpan.FromSeconds(60) && (!index.IsConnected || await index.CountChunkKeysAsync() < 12)) await Task.Delay(200);
        Assert.True(index.IsConnected, "reconnected");
        Assert.Equal(12, await index.CountChunkKeysAsync()); // every verified chunk is known to Redis again
    }
}
