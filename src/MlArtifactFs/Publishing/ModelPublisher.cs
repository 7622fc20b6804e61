using System.Buffers;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Manifest;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Publishing;

public sealed record PushOptions
{
    public required string Folder { get; init; }
    /// <summary>s3://bucket/prefix</summary>
    public required string Destination { get; init; }
    public required string ArtifactId { get; init; }
    public required string Version { get; init; }
    public IReadOnlyList<string> Prefetch { get; init; } = [];
    public long ChunkSize { get; init; } = ManifestGenerator.DefaultChunkSize;
    public Cache.ChunkHashAlgorithm ChunkHash { get; init; } = Cache.ChunkHashAlgorithm.Blake3;
    /// <summary>Store files as blobs/&lt;sha256&gt; under the prefix, so versions share storage.</summary>
    public bool ContentAddressed { get; init; }
    public int Parallelism { get; init; } = 4;
    /// <summary>Files above this go multipart (parallel parts).</summary>
    public long MultipartThreshold { get; init; } = 64L << 20;
    public long PartSize { get; init; } = 16L << 20;
}

public sealed record PushReport(int FilesUploaded, long BytesUploaded, int FilesSkipped, long BytesSkipped);

/// <summary>
/// `mlfs push`: hashes a model folder, uploads what the bucket does not already hold, and returns
/// the manifest. An object counts as present when its size and its x-amz-meta-mlfs-sha256 match,
/// so a second push of the same folder uploads nothing and an interrupted push resumes file by
/// file. Uploads never use aws-chunked bodies (some S3-compatible servers reject or store them).
/// </summary>
public sealed class ModelPublisher(IAmazonS3 s3, ILogger logger)
{
    private const string ShaMetadata = "x-amz-meta-mlfs-sha256";

    public static AmazonS3Client CreateClient(S3Settings settings)
    {
        var config = new AmazonS3Config
        {
            ForcePathStyle = settings.Endpoint is not null,
            AuthenticationRegion = settings.Region,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        };
        if (settings.Endpoint is { } endpoint) config.ServiceURL = endpoint.ToString();
        else config.RegionEndpoint = Amazon.RegionEndpoint.GetBySystemName(settings.Region);
        return settings.Credentials is { } credentials ? new AmazonS3Client(credentials, config) : new AmazonS3Client(new AnonymousAWSCredentials(), config);
    }

    public async Task<(ModelManifest Manifest, PushReport Report)> PushAsync(PushOptions options,
        IProgress<(string Path, long Bytes)>? progress = null, CancellationToken cancel = default)
    {
        var destination = new Uri(options.Destination);
        if (destination.Scheme != "s3" || string.IsNullOrEmpty(destination.Host))
            throw new ArgumentException($"destination must be s3://bucket/prefix, not \"{options.Destination}\"");
        string bucket = destination.Host;
        string prefix = Uri.UnescapeDataString(destination.AbsolutePath.Trim('/'));
        string urlPrefix = $"s3://{bucket}/{prefix}".TrimEnd('/');

        var manifest = await ManifestGenerator.GenerateAsync(options.Folder,
            new GenerateOptions(options.ArtifactId, options.Version, urlPrefix, options.Prefetch, options.ChunkSize, ChunkHash: options.ChunkHash), null, cancel).ConfigureAwait(false);
        if (options.ContentAddressed)
            foreach (var f in manifest.Files!) f.Url = $"{urlPrefix}/blobs/{f.Sha256}";

        await EnsureBucketAsync(bucket, cancel).ConfigureAwait(false);
        int uploaded = 0, skipped = 0;
        long uploadedBytes = 0, skippedBytes = 0;
        string root = Path.GetFullPath(options.Folder);
        await Parallel.ForEachAsync(manifest.Files!, new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancel },
            async (file, ct) =>
            {
                string key = options.ContentAddressed ? $"{prefix}/blobs/{file.Sha256}".TrimStart('/') : $"{prefix}/{file.Path}".TrimStart('/');
                if (await IsPresentAsync(bucket, key, file, ct).ConfigureAwait(false))
                {
                    Interlocked.Increment(ref skipped);
                    Interlocked.Add(ref skippedBytes, file.Size!.Value);
                    return;
                }
                string path = Path.Combine(root, file.Path!);
                if (file.Size!.Value > options.MultipartThreshold)
                    await UploadMultipartAsync(bucket, key, path, file, options, progress, ct).ConfigureAwait(false);
                else
                    await UploadSingleAsync(bucket, key, path, file, ct).ConfigureAwait(false);
                progress?.Report((file.Path!, file.Size.Value));
                Interlocked.Increment(ref uploaded);
                Interlocked.Add(ref uploadedBytes, file.Size.Value);
            }).ConfigureAwait(false);
        logger.LogInformation("push: {Uploaded} file(s) uploaded ({Bytes} bytes), {Skipped} already present", uploaded, uploadedBytes, skipped);
        return (manifest, new PushReport(uploaded, uploadedBytes, skipped, skippedBytes));
    }

    private async Task EnsureBucketAsync(string bucket, CancellationToken cancel)
    {
        try
        {
            await s3.GetBucketLocationAsync(new GetBucketLocationRequest { BucketName = bucket }, cancel).ConfigureAwait(false);
        }
        catch (AmazonS3Exception e) when (e.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            logger.LogInformation("push: creating bucket {Bucket}", bucket);
            await s3.PutBucketAsync(new PutBucketRequest { BucketName = bucket }, cancel).ConfigureAwait(false);
        }
    }

    private async Task<bool> IsPresentAsync(string bucket, string key, ManifestFile file, CancellationToken cancel)
    {
        try
        {
            var head = await s3.GetObjectMetadataAsync(new GetObjectMetadataRequest { BucketName = bucket, Key = key }, cancel).ConfigureAwait(false);
            return head.ContentLength == file.Size && string.Equals(head.Metadata[ShaMetadata], file.Sha256, StringComparison.OrdinalIgnoreCase);
        }
        catch (AmazonS3Exception e) when (e.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return false;
        }
    }

    /// <summary>Writes a small object whole (a manifest or its signature) at <paramref name="url"/> (s3://bucket/key).</summary>
    public async Task PutObjectAsync(string url, byte[] bytes, string contentType, CancellationToken cancel)
    {
        var uri = new Uri(url);
        string key = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        if (uri.Scheme != "s3" || string.IsNullOrEmpty(uri.Host) || key.Length == 0 || key.EndsWith('/'))
            throw new ArgumentException($"\"{url}\" is not s3://bucket/key");
        await s3.PutObjectAsync(new PutObjectRequest
        {
            BucketName = uri.Host, Key = key, InputStream = new MemoryStream(bytes), ContentType = contentType, UseChunkEncoding = false,
        }, cancel).ConfigureAwait(false);
    }

    private async Task UploadSingleAsync(string bucket, string key, string path, ManifestFile file, CancellationToken cancel)
    {
        var request = new PutObjectRequest { BucketName = bucket, Key = key, FilePath = path, UseChunkEncoding = false };
        request.Metadata[ShaMetadata] = file.Sha256;
        await s3.PutObjectAsync(request, cancel).ConfigureAwait(false);
    }

    private async Task UploadMultipartAsync(string bucket, string key, string path, ManifestFile file, PushOptions options,
        IProgress<(string, long)>? progress, CancellationToken cancel)
    {
        var start = new InitiateMultipartUploadRequest { BucketName = bucket, Key = key };
        start.Metadata[ShaMetadata] = file.Sha256;
        var upload = await s3.InitiateMultipartUploadAsync(start, cancel).ConfigureAwait(false);
        try
        {
            long size = file.Size!.Value;
            int parts = (int)((size + options.PartSize - 1) / options.PartSize);
            var etags = new PartETag[parts];
            long done = 0;
            await Parallel.ForEachAsync(Enumerable.Range(0, parts), new ParallelOptions { MaxDegreeOfParallelism = options.Parallelism, CancellationToken = cancel },
                async (part, ct) =>
                {
                    long offset = part * options.PartSize;
                    int length = (int)Math.Min(options.PartSize, size - offset);
                    byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
                    try
                    {
                        using (var handle = File.OpenHandle(path))
                            for (int read = 0; read < length;)
                                read += await RandomAccess.ReadAsync(handle, buffer.AsMemory(read, length - read), offset + read, ct).ConfigureAwait(false);
                        var response = await s3.UploadPartAsync(new UploadPartRequest
                        {
                            BucketName = bucket, Key = key, UploadId = upload.UploadId, PartNumber = part + 1,
                            InputStream = new MemoryStream(buffer, 0, length), PartSize = length, UseChunkEncoding = false,
                        }, ct).ConfigureAwait(false);
                        etags[part] = new PartETag(part + 1, response.ETag);
                        progress?.Report((file.Path!, Interlocked.Add(ref done, length)));
                    }
                    finally
                    {
                        ArrayPool<byte>.Shared.Return(buffer);
                    }
                }).ConfigureAwait(false);
            await s3.CompleteMultipartUploadAsync(new CompleteMultipartUploadRequest
            {
                BucketName = bucket, Key = key, UploadId = upload.UploadId, PartETags = [.. etags],
            }, cancel).ConfigureAwait(false);
        }
        catch
        {
            try { await s3.AbortMultipartUploadAsync(bucket, key, upload.UploadId, CancellationToken.None).ConfigureAwait(false); }
            catch (AmazonS3Exception) { }
            throw;
        }
    }
}
