using MlArtifactFs.Telemetry;
using Amazon.Runtime;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Manifest;
using MlArtifactFs.Publishing;
using MlArtifactFs.Storage;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>`mlfs push` into a real S3 server, and hot version switch of a running mount.</summary>
[Collection(S3Collection.Name)]
public sealed class PushAndSwitchTests(S3Fixture s3) : IDisposable
{
    private readonly DirectoryInfo _cache = Directory.CreateTempSubdirectory("mlfs-cache-");
    private readonly TestModel _model = new();

    public void Dispose()
    {
        _model.Dispose();
        _cache.Delete(recursive: true);
    }

    private ModelPublisher Publisher() =>
        new(ModelPublisher.CreateClient(new S3Settings(new Uri(s3.Endpoint), s3.Region, new BasicAWSCredentials(s3.AccessKey, s3.SecretKey))), NullLogger.Instance);

    private async Task<string> SaveAsync(ModelManifest manifest)
    {
        string path = Path.Combine(_model.ManifestFolder, $"pushed-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(path, ManifestLoader.Serialize(manifest));
        return path;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PushThenMountIsByteExactAndASecondPushUploadsNothing(bool contentAddressed)
    {
        _model.Add("config.json", 500, 1).Add("weights/model.safetensors", (70 << 20) + 3, 2).Add("tokenizer.json", 9000, 3).Add("empty", 0, 4);
        string bucket = await s3.CreateBucketAsync("push");
        var options = new PushOptions
        {
            Folder = _model.Folder, Destination = $"s3://{bucket}/bert/v1", ArtifactId = "bert", Version = "v1",
            Prefetch = ["config.json"], ContentAddressed = contentAddressed, MultipartThreshold = 32 << 20, PartSize = 8 << 20,
        };
        var (manifest, first) = await Publisher().PushAsync(options);
        Assert.Equal(4, first.FilesUploaded);
        var (_, second) = await Publisher().PushAsync(options);
        Assert.Equal(0, second.FilesUploaded);
        Assert.Equal(4, second.FilesSkipped);

        await using var mount = await InProcessMount.StartAsync(s3, await SaveAsync(manifest), _cache.FullName);
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
    }

    [Fact]
    public async Task SwitchingVersionsKeepsOpenFilesOnTheOldVersionAndFetchesOnlyWhatChanged()
    {
        for (int i = 0; i < 4; i++) _model.Add($"shard-{i}.bin", 2 << 20, 10 + i);
        _model.Add("config.json", "{\"v\": 1}"u8.ToArray());
        string bucket = await s3.CreateBucketAsync("switch");
        var v1Options = new PushOptions { Folder = _model.Folder, Destination = $"s3://{bucket}/m", ArtifactId = "m", Version = "v1", ContentAddressed = true };
        var (v1, _) = await Publisher().PushAsync(v1Options);
        string v1Path = await SaveAsync(v1);
        var oldShard = _model.Files["shard-3.bin"];
        _model.Add("shard-3.bin", 2 << 20, 99); // v2 changes one file of five
        var (v2, pushed) = await Publisher().PushAsync(v1Options with { Version = "v2" });
        Assert.Equal(1, pushed.FilesUploaded); // content-addressed: the other four blobs are shared
        string v2Path = await SaveAsync(v2);

        await using var mount = await InProcessMount.StartAsync(s3, v1Path, _cache.FullName);
        foreach (var (path, _) in _model.Files.Where(f => f.Key != "shard-3.bin"))
            await File.ReadAllBytesAsync(mount[path]); // v1 fully cached except...
        using var openOnV1 = File.OpenHandle(mount["shard-3.bin"]);
        var firstHalf = new byte[1 << 20];
        Assert.Equal(firstHalf.Length, RandomAccess.Read(openOnV1, firstHalf, 0));
        // Its read-ahead of v1's second half must not land inside the window measured below: read it now
        // (its bytes are counted as they arrive, before the read returns).
        Assert.Equal(1 << 20, RandomAccess.Read(openOnV1, new byte[1 << 20], 1 << 20));

        long before = mount.Mount.Stats[Counters.BytesFetched];
        var result = await mount.Mount.SwitchAsync(v2Path);
        Assert.Equal("v2", result.Version);
        Assert.Equal("v2", mount.Mount.GetStatus().Version);

        // New opens see v2, and only the changed file is fetched.
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
        long fetchedForV2 = mount.Mount.Stats[Counters.BytesFetched] - before;
        Assert.Equal(2 << 20, fetchedForV2);

        // The handle opened on v1 still reads v1 after the switch, to the end, without error.
        var secondHalf = new byte[1 << 20];
        Assert.Equal(secondHalf.Length, RandomAccess.Read(openOnV1, secondHalf, 1 << 20));
        Check.SameBytes(oldShard, [.. firstHalf, .. secondHalf], "v1 shard-3.bin through the old handle");
    }
}
