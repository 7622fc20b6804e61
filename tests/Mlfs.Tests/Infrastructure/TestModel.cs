using MlArtifactFs.Cache;
using MlArtifactFs.Manifest;

namespace Mlfs.Tests.Infrastructure;

/// <summary>A model folder on disk with deterministic random content, its manifest, and its upload.</summary>
public sealed class TestModel : IDisposable
{
    private readonly DirectoryInfo _root = Directory.CreateTempSubdirectory("mlfs-model-");
    private readonly DirectoryInfo _manifests = Directory.CreateTempSubdirectory("mlfs-manifests-");

    /// <summary>Where tests keep manifests they write (removed with the model).</summary>
    public string ManifestFolder => _manifests.FullName;

    public string Folder => _root.FullName;
    public Dictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);

    public TestModel Add(string path, int size, int seed)
    {
        var bytes = new byte[size];
        new Random(seed).NextBytes(bytes);
        return Add(path, bytes);
    }

    public TestModel Add(string path, byte[] bytes)
    {
        string full = Path.Combine(Folder, path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        File.WriteAllBytes(full, bytes);
        Files[path] = bytes;
        return this;
    }

    /// <summary>Uploads the folder to a fresh bucket under "m" and writes its manifest: the usual start of a test.</summary>
    public async Task<string> PublishAsync(S3Fixture s3, string bucketPrefix, long chunkSize = 1 << 20, string[]? prefetch = null, bool seedFormat = false,
        ChunkHashAlgorithm chunkHash = ChunkHashAlgorithm.Blake3)
    {
        string bucket = await s3.CreateBucketAsync(bucketPrefix);
        await s3.UploadFolderAsync(bucket, "m", Folder);
        return await WriteManifestAsync($"s3://{bucket}/m", chunkSize: chunkSize, prefetch: prefetch, seedFormat: seedFormat, chunkHash: chunkHash);
    }

    /// <summary>Uploads and writes a manifest of the given kind (chunk hashes by algorithm, or the seed format).</summary>
    public Task<string> PublishAsync(S3Fixture s3, string bucketPrefix, ManifestKind kind) =>
        PublishAsync(s3, bucketPrefix, seedFormat: kind == ManifestKind.Seed, chunkHash: kind.Algorithm());

    public async Task<string> WriteManifestAsync(string urlPrefix, string version = "v1", long chunkSize = 1 << 20, string[]? prefetch = null, bool seedFormat = false,
        ChunkHashAlgorithm chunkHash = ChunkHashAlgorithm.Blake3)
    {
        var manifest = await ManifestGenerator.GenerateAsync(Folder, new GenerateOptions("test-model", version, urlPrefix, prefetch ?? [], chunkSize, ChunkHash: chunkHash));
        if (seedFormat) manifest.ToSeedFormat();
        string path = Path.Combine(ManifestFolder, $"manifest-{Guid.NewGuid():N}.json");
        await File.WriteAllTextAsync(path, ManifestLoader.Serialize(manifest));
        return path;
    }

    public void Dispose()
    {
        _root.Delete(recursive: true);
        _manifests.Delete(recursive: true);
    }
}

/// <summary>What kind of manifest a test mounts: chunk hashes of either algorithm, or none (the seed format).</summary>
public enum ManifestKind { Blake3, Sha256, Seed }

public static class ManifestKinds
{
    public static ChunkHashAlgorithm Algorithm(this ManifestKind kind) => kind == ManifestKind.Sha256 ? ChunkHashAlgorithm.Sha256 : ChunkHashAlgorithm.Blake3;

    /// <summary>Every kind, for theories that must hold for each.</summary>
    public static TheoryData<ManifestKind> All() => [ManifestKind.Blake3, ManifestKind.Sha256, ManifestKind.Seed];

    /// <summary>The kinds with chunk hashes.</summary>
    public static TheoryData<ManifestKind> Chunked() => [ManifestKind.Blake3, ManifestKind.Sha256];
}
