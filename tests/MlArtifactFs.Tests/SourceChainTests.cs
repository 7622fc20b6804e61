using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fetching.Sources;
using MlArtifactFs.Index;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Tests;

/// <summary>
/// The chain of chunk sources and the sink, each against fakes: a source that sets chunks aside, an
/// index that names wrong bytes, bytes that do not match. (The same sources run against the real S3
/// server, redis-server and peer processes in Mlfs.Tests.)
/// </summary>
public sealed class SourceChainTests : IDisposable
{
    private const int Chunk = 64 * 1024;
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mlfs-chain-test-");
    private readonly BlobCache _cache;
    private readonly CounterSet _counters = new();
    private readonly MemoryObjectStore _store = new();

    public SourceChainTests() => _cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);

    public void Dispose()
    {
        _cache.Dispose();
        _counters.Dispose();
        _dir.Delete(recursive: true);
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static BlobDescriptor Describe(byte[] bytes) =>
        new(Convert.ToHexStringLower(SHA256.HashData(bytes)), bytes.Length, Chunk,
            [.. Enumerable.Range(0, (bytes.Length + Chunk - 1) / Chunk).Select(c => Convert.ToHexStringLower(SHA256.HashData(bytes.AsSpan(c * Chunk, Math.Min(Chunk, bytes.Length - c * Chunk)))))]);

    private static ChunkJob Job(ChunkedBlob blob, params int[] missing)
    {
        var run = new ChunkRun(blob, new ObjectLocation(new Uri("http://memory/a"), false, null, null, "a"), "a", missing.Min(), missing.Max(), FetchPriority.Demand);
        return new ChunkJob(run, blob, new ChunkMemory(16 * Chunk), [.. missing], default);
    }

    /// <summary>Takes every chunk it is offered, and says in which order it was asked.</summary>
    private sealed class TakingSource(List<string> calls, string name) : IChunkSource
    {
        public Task FetchAsync(ChunkJob job)
        {
            calls.Add($"{name}:{string.Join(",", job.Missing)}");
            job.Missing.Clear();
            return Task.CompletedTask;
        }
    }

    /// <summary>Sets the chunks it is told about aside (someone else fetches them), then finds that they never came.</summary>
    private sealed class DeferringSource(List<string> calls, params int[] theirs) : IChunkSource
    {
        public Task FetchAsync(ChunkJob job)
        {
            calls.Add($"defer:{string.Join(",", theirs)}");
            job.Defer(this, [.. theirs.Where(job.Missing.Contains)]);
            return Task.CompletedTask;
        }

        public Task<List<int>> AwaitDeferredAsync(ChunkJob job, List<int> chunks)
        {
            calls.Add($"await:{string.Join(",", chunks)}");
            return Task.FromResult(chunks);
        }
    }

    [Fact]
    public async Task ChunksSetAsideAreAwaitedAfterTheRunFetchedItsOwnAndWhatNeverCameGoesOnDownTheChain()
    {
        var blob = (ChunkedBlob)_cache.Open(Describe(Bytes(4 * Chunk, 1)));
        var calls = new List<string>();
        var chain = new SourceChain([new DeferringSource(calls, 1, 2), new TakingSource(calls, "storage")]);
        var job = Job(blob, 0, 1, 2, 3);
        await chain.FetchAsync(job);
        // Its own chunks first (so two processes never wait on each other in a circle), then the wait, then the rest from storage.
        Assert.Equal(["defer:1,2", "storage:0,3", "await:1,2", "storage:1,2"], calls);
        Assert.Empty(job.Missing);
        _cache.Release(blob);
    }

    [Fact]
    public async Task AChainThatCannotGetAChunkFailsTheRunRatherThanPretend()
    {
        var blob = (ChunkedBlob)_cache.Open(Describe(Bytes(2 * Chunk, 2)));
        var chain = new SourceChain([new DeferringSource([], 1)]); // nobody after it
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => chain.FetchAsync(Job(blob, 0, 1)));
        Assert.Contains("no source could get chunks", e.Message);
        _cache.Release(blob);
    }

    /// <summary>An index that names, for every chunk, a blob of ours holding other bytes (a wrong neighbour, a planted Redis entry).</summary>
    private sealed class LyingIndex(string blobName) : IChunkIndex
    {
        public ValueTask<IReadOnlyList<ChunkLocation>> FindAsync(ChunkId chunk) => ValueTask.FromResult<IReadOnlyList<ChunkLocation>>([new ChunkLocation(blobName, 0)]);
        public void Add(string blobName, IReadOnlyList<(int Chunk, ChunkId Id)> chunks) { }
        public void Remove(string blobName, int chunk, ChunkId id) { }
        public ValueTask<bool> TryLeaseAsync(string key, TimeSpan ttl) => ValueTask.FromResult(true);
        public void ReleaseLease(string key) { }
        public string Describe() => "lying";
        public void Dispose() { }
    }

    [Fact]
    public async Task ADuplicateTheIndexNamesIsHashedAndRefusedWhenItsBytesAreWrong()
    {
        // A neighbour blob on disk with other bytes; the index claims it holds our chunks.
        var other = Bytes(Chunk, 3);
        var neighbour = (ChunkedBlob)_cache.Open(Describe(other));
        ChunkVerifier.TryVerify(neighbour.Descriptor, 0, other, out var verified);
        neighbour.WriteVerified(verified);

        var truth = Bytes(2 * Chunk, 4);
        var location = _store.Put("a", truth);
        using var path = FetchPath.Compose(_store, _cache, new FetcherOptions(), _counters, NullLogger.Instance, new LyingIndex(neighbour.Name));
        var blob = _cache.Open(Describe(truth));
        await path.Fetcher.EnsureAsync(blob, location, "a", 0, truth.Length, FetchPriority.Demand, default);

        var read = new byte[truth.Length];
        Assert.Equal(truth.Length, blob.Read(0, read));
        Assert.Equal(truth, read);                            // the wrong bytes were never taken
        Assert.Equal(0, _counters[Counters.ChunksDeduplicated]);
        Assert.Equal(2, _cache.IgnoredIndexEntries);          // one refusal per chunk, counted
        Assert.Equal(truth.Length, _counters[Counters.BytesFetched]); // fetched from storage instead
        _cache.Release(blob);
        _cache.Release(neighbour);
    }

    [Fact]
    public async Task TheSinkStagesAndStoresOnlyBytesThatMatchTheReadersHash()
    {
        var truth = Bytes(2 * Chunk, 5);
        var blob = (ChunkedBlob)_cache.Open(Describe(truth));
        var sink = new ChunkSink(new LocalChunkIndex(), _counters, NullLogger.Instance);
        var job = Job(blob, 0, 1);
        var wrong = (byte[])truth[..Chunk].Clone();
        wrong[100] ^= 1;
        Assert.Null(sink.Verify(job.Run, 0, wrong, out string actual));
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(wrong)), actual);
        Assert.False(blob.IsServable(0));

        var buffer = await job.RentAsync(1);
        truth.AsSpan(Chunk).CopyTo(buffer.Memory.Span);
        var good = sink.Verify(job.Run, 1, buffer.Memory, out _);
        Assert.NotNull(good);
        sink.Accept(job.Run, good.Value, buffer);
        Assert.True(blob.IsServable(1));
        Assert.True(blob.IsRecorded(1));
        Assert.False(job.Run.WaitAsync(job.Run.End).IsCompleted); // chunk 0 is still missing: its readers wait
        Assert.True(job.Run.WaitAsync(job.Run.Start).IsCompleted);
        _cache.Release(blob);
    }
}
