using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Manifest;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Benchmarks;

/// <summary>
/// A READ of cached bytes through the mount's file system without passthrough: the hit check and a
/// pread from the cache file (in the page cache), with the real cache, fetcher and tree; no kernel,
/// no network. Must allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class CacheHitBenchmarks
{
    private const int ChunkSize = 4 << 20;
    private DirectoryInfo _dir = null!;
    private BlobCache _cache = null!;
    private ChunkFetcher _fetcher = null!;
    private ModelFileSystem _fs = null!;
    private ulong _node, _handle;
    private readonly byte[] _buffer = new byte[128 * 1024];

    [GlobalSetup]
    public void Setup()
    {
        var data = new byte[4 * ChunkSize];
        new Random(2).NextBytes(data);
        string chunks = string.Join(',', Enumerable.Range(0, 4).Select(c => $"\"{Convert.ToHexStringLower(SHA256.HashData(data.AsSpan(c * ChunkSize, ChunkSize)))}\""));
        var manifest = ManifestLoader.Parse($$"""
            {"artifact_id": "bench", "version": "v1", "chunk_size": {{ChunkSize}}, "files": [{"path": "weights.bin",
             "url": "s3://bench/weights.bin", "size": {{data.Length}}, "sha256": "{{Convert.ToHexStringLower(SHA256.HashData(data))}}", "chunks": [{{chunks}}]}]}
            """);
        var tree = FileTree.Build(manifest, new S3Settings(new Uri("http://127.0.0.1:9"), "us-east-1", null), 2);
        _dir = Directory.CreateTempSubdirectory("mlfs-bench-hit-");
        _cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);
        var stats = new FetchStatistics();
        _fetcher = new ChunkFetcher(new MemoryStore(data), _cache, new FetcherOptions(), stats, NullLogger.Instance);
        _fs = new ModelFileSystem(tree, _cache, _fetcher, stats, NullLogger.Instance);
        _node = tree.FindPath("weights.bin")!.Id;
        if (_fs.Open(_node, 0, out var open) != 0) throw new InvalidOperationException("open failed");
        _handle = open.Handle;
        for (long offset = 0; offset < data.Length; offset += _buffer.Length) // fill the cache through the real miss path
            _fs.ReadAsync(_node, _handle, offset, _buffer, default).AsTask().GetAwaiter().GetResult();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _fs.Dispose();
        _fetcher.Dispose();
        _cache.Dispose();
        _dir.Delete(recursive: true);
    }

    [Benchmark]
    public int Read128KiBFromTheCache()
    {
        var read = _fs.ReadAsync(_node, _handle, 5L << 20, _buffer, default);
        return read.IsCompletedSuccessfully ? read.Result : throw new InvalidOperationException("a cached read should complete at once");
    }

    /// <summary>The object, served from memory.</summary>
    private sealed class MemoryStore(byte[] data) : IObjectStore
    {
        public Task<Stream> OpenRangeAsync(ObjectLocation location, long offset, long length, CancellationToken cancel) =>
            Task.FromResult<Stream>(new MemoryStream(data, (int)offset, (int)length, writable: false));
    }
}
