using System.Text.Json;
using MlArtifactFs.Cache;
using MlArtifactFs.Fuse;
using MlArtifactFs.Manifest;
using MlArtifactFs.Telemetry;
using Mlfs.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// BLAKE3 and SHA-256 manifests of the same bytes on one cache directory, in one process and across
/// processes sharing Redis: each verifies with its own algorithm and fetches its own chunks; neither
/// ever takes a chunk of the other, not even a manifest that lists the other algorithm's digests as its own.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class ChunkHashTests(S3Fixture s3, RedisFixture redis, ITestOutputHelper output) : MountProcessTestBase("mlfs-hashes-")
{
    private const int Chunk = 1 << 20;

    /// <summary>
    /// The same file as a SHA-256 manifest, a BLAKE3 manifest, and a "confused" manifest that says BLAKE3
    /// but lists the SHA-256 digests (what a shared index keyed by bare digests would hand it).
    /// </summary>
    private async Task<(string Sha256, string Blake3, string Confused, byte[] Bytes)> ManifestsAsync(string bucketPrefix)
    {
        _model.Add("weights.bin", 5 * Chunk + 321, 61);
        string bucket = await s3.CreateBucketAsync(bucketPrefix);
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string sha = await _model.WriteManifestAsync($"s3://{bucket}/m", chunkHash: ChunkHashAlgorithm.Sha256);
        string b3 = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v1-blake3");
        var confused = ManifestLoader.Load(sha);
        confused.ChunkHash = "blake3";
        confused.Version = "v1-confused";
        string confusedPath = Path.Combine(_model.ManifestFolder, "confused.json");
        await File.WriteAllTextAsync(confusedPath, ManifestLoader.Serialize(confused));
        return (sha, b3, confusedPath, _model.Files["weights.bin"]);
    }

    [Fact]
    public async Task InOneProcessEachManifestVerifiesWithItsOwnAlgorithmAndTakesNothingOfTheOther()
    {
        var (sha, b3, confused, bytes) = await ManifestsAsync("hash1");
        await using var mount = await InProcessMount.StartAsync(s3, sha, Cache);
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount["weights.bin"]), "the SHA-256 manifest");
        long afterSha = mount.Mount.Stats[Counters.BytesFetched];

        await mount.Mount.SwitchAsync(b3);
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount["weights.bin"]), "the BLAKE3 manifest");
        long forBlake3 = mount.Mount.Stats[Counters.BytesFetched] - afterSha;

        await mount.Mount.SwitchAsync(confused);
        int errno = ReadErrno(mount["weights.bin"]);
        var check = CacheCheck.Run(Cache);
        output.WriteLine($"one process: SHA-256 fetched {afterSha}, BLAKE3 fetched {forBlake3} of {bytes.Length}; confused manifest: errno {errno}; " +
                         $"dedup {mount.Mount.Stats[Counters.ChunksDeduplicated]}; cache check {check.ChunksChecked} chunks in {check.Blobs} blobs, {check.Damaged.Count} damaged");
        Assert.Equal(bytes.Length, forBlake3); // its own chunks, fetched: the SHA-256 ones name other ids
        Assert.Equal(0, mount.Mount.Stats[Counters.ChunksDeduplicated]);
        Assert.Equal(5, errno); // EIO: no chunk verifies under BLAKE3, and none is taken from the SHA-256 blob
        Assert.Contains(mount.Logger.Lines, l => l.Contains("does not match its BLAKE3", StringComparison.Ordinal));
        Assert.Empty(check.Damaged);
        Assert.Equal(2 * 6, check.ChunksChecked); // the two honest blobs, whole; nothing recorded for the confused one
    }

    [Fact]
    public async Task ProcessesSharingRedisNeverHandAChunkOfOneAlgorithmToTheOther()
    {
        var (sha, b3, confused, bytes) = await ManifestsAsync("hash2");
        string a = _work.CreateSubdirectory("a").FullName, b = _work.CreateSubdirectory("b").FullName, c = _work.CreateSubdirectory("c").FullName;
        string[] withRedis = ["--redis", redis.ConnectionString];
        await using var first = await MountProcess.StartAsync(_work.FullName, sha, a, Cache, s3.Environment(), true, withRedis);
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(a, "weights.bin")), "the SHA-256 manifest");
        await using var second = await MountProcess.StartAsync(_work.FullName, b3, b, Cache, s3.Environment(), true, withRedis);
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(b, "weights.bin")), "the BLAKE3 manifest");
        await using var third = await MountProcess.StartAsync(_work.FullName, confused, c, Cache, s3.Environment(), true, withRedis);
        int errno = ReadErrno(Path.Combine(c, "weights.bin"));

        var statusB = await StatusAsync(b);
        var statusC = await StatusAsync(c);
        var check = CacheCheck.Run(Cache);
        output.WriteLine($"Redis: BLAKE3 process fetched {statusB.GetProperty("bytes_fetched").GetInt64()} bytes, deduplicated {statusB.GetProperty("chunks_deduplicated").GetInt64()} chunks; " +
                         $"confused process errno {errno}, deduplicated {statusC.GetProperty("chunks_deduplicated").GetInt64()}; cache check {check.ChunksChecked} chunks, {check.Damaged.Count} damaged");
        Assert.Equal(bytes.Length, statusB.GetProperty("bytes_fetched").GetInt64());
        Assert.Equal(0, statusB.GetProperty("chunks_deduplicated").GetInt64());
        Assert.Equal(5, errno);
        Assert.Equal(0, statusC.GetProperty("chunks_deduplicated").GetInt64());
        Assert.Empty(check.Damaged);
        Assert.Equal(2 * 6, check.ChunksChecked);
    }

    /// <summary>The errno a whole-file read ends with (0 when it succeeds).</summary>
    private static int ReadErrno(string path)
    {
        try
        {
            File.ReadAllBytes(path);
            return 0;
        }
        catch (IOException e)
        {
            return e.HResult & 0xFFFF;
        }
    }
}
