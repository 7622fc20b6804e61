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
/// A READ of cached bytes through the mount's file system without passthrough: the hit check, the
/// file range it answers with, and the pread the session's copy path does of it (the cache file is in
/// the page cache), with the real cache, fetch path and tree; no kernel, no network. Must allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class CacheHitBenchmarks
{
    private const int ChunkSize = 4 << 20;
    private DirectoryInfo _dir = null!;
    private BlobCache _cache = null!;
    private FetchPath _fetch = null!;
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _cacheFile;
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
        var counters = new CounterSet();
        _fetch = FetchPath.Compose(new MemoryStore(data), _cache, new FetcherOptions(), counters, NullLogger.Instance);
        _fs = new ModelFileSystem(tree, _cache, _fetch, counters, NullLogger.Instance);
        _node = tree.FindPath("weights.bin")!.Id;
        if (!_fs.Open(_node, 0, out var open).IsOk) throw new InvalidOperationException("open failed");
        _handle = open.Handle;
        for (long offset = 0; offset < data.Length; offset += _buffer.Length) // fill the cache through the real miss path
            _fs.ReadAsync(_node, _handle, offset, _buffer, default).AsTask().GetAwaiter().GetResult();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _fs.Dispose();
        _fetch.Dispose();
        _cache.Dispose();
        _dir.Delete(recursive: true);
    }

    [Benchmark]
    public int Read128KiBFromTheCache()
    {
        var read = _fs.ReadAsync(_node, _handle, 5L << 20, _buffer, default);
        if (!read.IsCompletedSuccessfully) throw new InvalidOperationException("a cached read should complete at once");
        var result = read.Result;
        if (!result.IsFileRange) return result.Length;
        _cacheFile ??= new Microsoft.Win32.SafeHandles.SafeFileHandle(result.Fd, ownsHandle: false);
        return RandomAccess.Read(_cacheFile, _buffer, result.FileOffset);
    }

    /// <summary>The object, served from memory.</summary>
    private sealed class MemoryStore(byte[] data) : IObjectStore
    {
        public Task<Stream> OpenRangeAsync(ObjectLocation location, long offset, long length, CancellationToken cancel) =>
            Task.FromResult<Stream>(new MemoryStream(data, (int)offset, (int)length, writable: false));
    }
}
