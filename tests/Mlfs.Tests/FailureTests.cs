using MlArtifactFs.Telemetry;
using MlArtifactFs.Mounting;
using Mlfs.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>What users meet when storage misbehaves: EIO and a clear log line, never a wrong byte.</summary>
[Collection(S3Collection.Name)]
public sealed class FailureTests(S3Fixture s3, ITestOutputHelper output) : ModelTestBase
{

    private static int ReadErrno(string path, long offset = 0)
    {
        try
        {
            using var handle = File.OpenHandle(path);
            RandomAccess.Read(handle, new byte[4096], offset);
            return 0;
        }
        catch (IOException e)
        {
            return e.HResult & 0xFFFF;
        }
    }

    [Theory]
    [MemberData(nameof(ManifestKinds.Chunked), MemberType = typeof(ManifestKinds))]
    public async Task AChunkWhoseBytesDoNotMatchGivesEioCachesNothingAndSaysWhy(ManifestKind kind)
    {
        _model.Add("weights.bin", 2 * Chunk, 1);
        string bucket = await s3.CreateBucketAsync("fail");
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m", chunkHash: kind.Algorithm());
        var tampered = (byte[])_model.Files["weights.bin"].Clone();
        tampered[Chunk + 10] ^= 0xFF; // the object in storage differs from what the manifest says (chunk 1)
        await s3.PutAsync(bucket, "m/weights.bin", tampered);

        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        using var handle = File.OpenHandle(mount["weights.bin"]);
        var good = new byte[4096];
        Assert.Equal(4096, RandomAccess.Read(handle, good, 0)); // chunk 0 is intact and served
        Assert.Equal(_model.Files["weights.bin"][..4096], good);
        var error = Assert.ThrowsAny<IOException>(() => RandomAccess.Read(handle, new byte[4096], Chunk + 4096));
        Assert.Contains("Input/output error", error.Message);
        Assert.Contains(mount.Logger.Lines, l => l.Contains("weights.bin: chunk 1", StringComparison.Ordinal) && l.Contains($"does not match its {(kind == ManifestKind.Sha256 ? "SHA-256" : "BLAKE3")}", StringComparison.Ordinal));
        var blobRecord = Directory.EnumerateFiles(_cache.FullName, "*.rec", SearchOption.AllDirectories).Single();
        Assert.Equal(64 + 48, new FileInfo(blobRecord).Length); // header + one 48-byte entry (chunk 0): the bad chunk was never recorded
    }

    [Fact]
    public async Task AMissingObjectGivesEioAndTheLogNamesTheFile()
    {
        _model.Add("present.bin", 1000, 2).Add("missing.bin", 1000, 3);
        string bucket = await s3.CreateBucketAsync("fail");
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m");
        await s3.PutAsync(bucket, "m/present.bin", _model.Files["present.bin"]);

        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        Assert.Equal(_model.Files["present.bin"], await File.ReadAllBytesAsync(mount["present.bin"]));
        Assert.Equal(5, ReadErrno(mount["missing.bin"])); // EIO
        Assert.Contains(mount.Logger.Lines, l => l.Contains("missing.bin", StringComparison.Ordinal) && l.Contains("HTTP 404", StringComparison.Ordinal));
        Assert.True(mount.Mount.Stats[Counters.FetchFailures] >= 1);
        Assert.Equal(0, mount.Mount.Stats[Counters.Retries]); // 404 is not retried
    }

    [Fact]
    public async Task WrongCredentialsRefuseTheMountWithAClearMessageAndNoSecret()
    {
        _model.Add("config.json", 100, 4);
        string manifest = await _model.PublishAsync(s3, "fail", prefetch: ["config.json"]);
        const string wrongSecret = "definitely-not-the-secret-0123456789";
        var e = await Assert.ThrowsAsync<MountException>(() => InProcessMount.StartAsync(s3, manifest, _cache.FullName, secret: wrongSecret));
        Assert.Contains("prefetch failed", e.Message);
        Assert.Contains("config.json", e.Message);
        Assert.Contains("HTTP 403", e.Message);
        Assert.True(e.AccessDenied);
        Assert.DoesNotContain(wrongSecret, e.Message);
    }

    [Fact]
    public async Task ARequestTheServerRefusesIsNotRetriedAndGivesEioAtOnce()
    {
        _model.Add("weights.bin", 2 * Chunk, 23);
        string manifest = await _model.PublishAsync(s3, "refused");
        await using var proxy = new FaultProxy(s3.Endpoint) { Faults = (_, _) => ProxyFault.BadRequest };
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint);
        Assert.Equal(5, ReadErrno(mount["weights.bin"], 7)); // EIO
        // A 400 is an answer, not a hiccup: no retry. (The kernel may read the failed page once more by itself,
        // which asks again; retried, it would take MaxAttempts GETs per read.)
        Assert.Equal(0, mount.Mount.Stats[Counters.Retries]);
        Assert.True(proxy.Gets < InProcessMount.FastRetries.MaxAttempts, $"{proxy.Gets} GETs");
        Assert.Contains(mount.Logger.Lines, l => l.Contains("weights.bin", StringComparison.Ordinal) && l.Contains("HTTP 400 InvalidArgument", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(ProxyFault.ServiceUnavailable)]
    [InlineData(ProxyFault.SlowDown)]
    [InlineData(ProxyFault.ConnectionReset)]
    [InlineData(ProxyFault.TruncatedBody)]
    [InlineData(ProxyFault.FlippedByte)]
    [InlineData(ProxyFault.HtmlErrorWith200)]
    [InlineData(ProxyFault.WrongContentRange)]
    [InlineData(ProxyFault.ShortRange)]
    [InlineData(ProxyFault.RangeIgnored)]
    [InlineData(ProxyFault.ShiftedBody)]
    public async Task InjectedFaultsAreRetriedAndEveryByteIsCorrect(ProxyFault fault)
    {
        _model.Add("a.bin", 3 * Chunk + 7, 5).Add("b.bin", 2 * Chunk, 6);
        string manifest = await _model.PublishAsync(s3, "fault");
        await using var proxy = new FaultProxy(s3.Endpoint) { Faults = (n, _) => n % 2 == 1 ? fault : ProxyFault.None }; // every other GET fails
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint);
        long wrongBytes = 0, servedBytes = 0;
        foreach (var (path, bytes) in _model.Files)
        {
            byte[] served = await File.ReadAllBytesAsync(mount[path]);
            servedBytes += served.Length;
            wrongBytes += Math.Abs(served.Length - bytes.Length);
            for (int i = 0; i < Math.Min(served.Length, bytes.Length); i++) if (served[i] != bytes[i]) wrongBytes++;
        }
        output.WriteLine($"{fault}: {proxy.FaultsInjected} faults injected in {proxy.Gets} GETs, {mount.Mount.Stats[Counters.Retries]} retries, {servedBytes} bytes served, {wrongBytes} wrong");
        Assert.Equal(0, wrongBytes);
        Assert.True(proxy.FaultsInjected > 0);
        Assert.True(mount.Mount.Stats[Counters.Retries] > 0);
        Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
    }

    [Fact]
    public async Task ACacheSmallerThanTheModelStaysUnderItsBoundAndReadsStayCorrect()
    {
        for (int i = 0; i < 6; i++) _model.Add($"shard-{i}.bin", 2 * Chunk, 10 + i);
        string manifest = await _model.PublishAsync(s3, "bound");
        long bound = 5L * Chunk; // the model is 12 MiB
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, cacheSize: bound);
        for (int round = 0; round < 2; round++)
        {
            foreach (var (path, bytes) in _model.Files.OrderBy(f => f.Key))
            {
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
                var usage = mount.Mount.Cache.Usage();
                Assert.True(usage.Bytes <= bound, $"cache holds {usage.Bytes} bytes, bound {bound}");
            }
        }
    }
}
