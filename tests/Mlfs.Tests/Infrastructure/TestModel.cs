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
    public async Task<string> PublishAsync(S3Fixture s3, string bucketPrefix, long chunkSize = 1 << 20, string[]? prefetch = null, bool seedFormat = false)
    {
        string bucket = await s3.CreateBucketAsync(bucketPrefix);
        await s3.UploadFolderAsync(bucket, "m", Folder);
        return await WriteManifestAsync($"s3://{bucket}/m", chunkSize: chunkSize, prefetch: prefetch, seedFormat: seedFormat);
    }

    public async Task<string> WriteManifestAsync(string urlPrefix, string version = "v1", long chunkSize = 1 << 20, string[]? prefetch = null, bool seedFormat = false)
    {
        var manifest = await ManifestGenerator.GenerateAsync(Folder, new GenerateOptions("test-model", version, urlPrefix, prefetch ?? [], chunkSize));
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
