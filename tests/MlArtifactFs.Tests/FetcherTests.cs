using System.Security.Cryptography;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Tests;

/// <summary>The fetcher and cache against an in-memory store with injected faults (no network, no kernel).</summary>
public sealed class FetcherTests : IDisposable
{
    private const int Chunk = 256 * 1024;
    private readonly DirectoryInfo _cacheDir = Directory.CreateTempSubdirectory("mlfs-cache-test-");
    private readonly MemoryObjectStore _store = new();
    private readonly CounterSet _stats = new();
    private BlobCache _cache;
    private ChunkFetcher _fetcher;

    public FetcherTests()
    {
        _cache = new BlobCache(_cacheDir.FullName, 1L << 30, NullLogger.Instance);
        _fetcher = NewFetcher();
    }

    /// <summary>Tests that hold a body paused keep the 10 s stall timeout, so a slow, busy machine cannot turn the pause into a retry.</summary>
    private ChunkFetcher NewFetcher(long maxRequest = 4 * Chunk, int stallMs = 10_000) => FetchPath.Compose(_store, _cache, new FetcherOptions
    {
        MaxRequestBytes = maxRequest,
        BufferSize = 64 * 1024,
        RetryBaseDelay = TimeSpan.FromMilliseconds(1),
        RetryMaxDelay = TimeSpan.FromMilliseconds(5),
        StallTimeout = TimeSpan.FromMilliseconds(stallMs),
        MaxAttempts = 4,
    }, _stats, NullLogger.Instance).Fetcher;

    /// <summary>A new process on the same cache directory: nothing in memory survives.</summary>
    private void Restart()
    {
        _fetcher.Dispose();
        _cache.Dispose();
        _cache = new BlobCache(_cacheDir.FullName, 1L << 30, NullLogger.Instance);
        _fetcher = NewFetcher();
    }

    public void Dispose()
    {
        _fetcher.Dispose();
        _cache.Dispose();
        _cacheDir.Delete(recursive: true);
    }

    private static byte[] Bytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private (BlobDescriptor Descriptor, ObjectLocation Location) Put(string name, byte[] bytes, bool chunked = true, long chunkSize = Chunk)
    {
        var location = _store.Put(name, bytes);
        List<string>? chunks = null;
        if (chunked)
        {
            chunks = [];
            for (long o = 0; o < bytes.Length; o += chunkSize)
                chunks.Add(Convert.ToHexStringLower(SHA256.HashData(bytes.AsSpan((int)o, (int)Math.Min(chunkSize, bytes.Length - o)))));
        }
        return (new BlobDescriptor(Convert.ToHexStringLower(SHA256.HashData(bytes)), bytes.Length, chunkSize, chunks), location);
    }

    private static byte[] ReadAll(CachedBlob blob)
    {
        var result = new byte[blob.Descriptor.Size];
        Assert.Equal(result.Length, blob.Read(0, result));
        return result;
    }

    [Fact]
    public async Task ConcurrentReadersOfOneColdChunkShareOneFetch()
    {
        var bytes = Bytes(Chunk, 1);
        var (d, loc) = Put("a", bytes);
        var blob = _cache.Open(d);
        _store.PauseAfter = 1000; // hold the body so every reader arrives while it is in flight
        var readers = Enumerable.Range(0, 8).Select(i => _fetcher.EnsureAsync(blob, loc, "a", i * 1000, 100, FetchPriority.Demand, default).AsTask()).ToList();
        await _store.Paused.Task.WaitAsync(TimeSpan.FromSeconds(10));
        _store.Release.SetResult();
        await Task.WhenAll(readers).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, _store.Calls);
        Assert.Equal(bytes, ReadAll(blob));
        _cache.Release(blob);
    }

    [Fact]
    public async Task AReadIsAnsweredWhenItsChunkArrivesNotWhenTheWholeRequestDoes()
    {
        var bytes = Bytes(4 * Chunk, 2);
        var (d, loc) = Put("a", bytes);
        var blob = _cache.Open(d);
        _store.PauseAfter = Chunk + 10; // the one GET covering 4 chunks stalls just after chunk 0
        await _fetcher.EnsureAsync(blob, loc, "a", 0, 4096, FetchPriority.Demand, default).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(blob.IsRangeServable(0, 4096));
        Assert.False(blob.IsRangeServable(Chunk, 1)); // the rest is still in flight
        Assert.True(_store.BytesServed < 4 * Chunk);
        _store.Release.SetResult();
        await _fetcher.EnsureAsync(blob, loc, "a", 0, bytes.Length, FetchPriority.Demand, default).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(bytes, ReadAll(blob));
        _cache.Release(blob);
    }

    [Fact]
    public async Task SeedFormatFirstBytesArriveBeforeTheChunkCompletes()
    {
        // No chunk hashes: a 16 MiB-style chunk streams and the first 4 KiB is served as it lands.
        var bytes = Bytes(4 * Chunk, 3);
        var (d, loc) = Put("seed", bytes, chunked: false, chunkSize: 4 * Chunk);
        var blob = _cache.Open(d);
        _store.PauseAfter = 64 * 1024;
        await _fetcher.EnsureAsync(blob, loc, "seed", 0, 4096, FetchPriority.Demand, default).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(_store.BytesServed < 4 * Chunk);
        Assert.False(blob.IsComplete);
        var first = new byte[4096];
        blob.Read(0, first);
        Assert.Equal(bytes[..4096], first);
        _store.Release.SetResult();
        await _fetcher.EnsureAsync(blob, loc, "seed", 0, bytes.Length, FetchPriority.Demand, default).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        await blob.WholeVerified.WaitAsync(TimeSpan.FromSeconds(30)); // verified whole once the last chunk lands
        Assert.True(blob.IsComplete);
        _cache.Release(blob);
    }

    [Theory]
    [InlineData(Fault.ServiceUnavailable)]
    [InlineData(Fault.TruncatedBody)]
    [InlineData(Fault.ConnectionReset)]
    [InlineData(Fault.FlippedByte)]
    [InlineData(Fault.Stall)]
    public async Task TransientFaultsAreRetriedAndBytesAreExact(Fault fault)
    {
        var bytes = Bytes(3 * Chunk + 17, 4);
        var (d, loc) = Put("a", bytes);
        _store.Faults = call => call <= 2 ? fault : Fault.None; // the first two attempts fail
        if (fault == Fault.Stall)
        {
            _fetcher.Dispose();
            _fetcher = NewFetcher(stallMs: 300);
        }
        var blob = _cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "a", 0, bytes.Length, FetchPriority.Demand, default).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(bytes, ReadAll(blob));
        Assert.True(_stats[Counters.Retries] >= 2);
        // Complete once every chunk is stored: the last write lands just after its readers were answered from memory.
        await blob.WholeVerified.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(blob.IsComplete);
        _cache.Release(blob);
    }

    [Fact]
    public async Task BytesThatNeverVerifyFailWithNothingCached()
    {
        var bytes = Bytes(2 * Chunk, 5);
        var (d, loc) = Put("a", bytes);
        _store.Faults = _ => Fault.FlippedByte;
        var blob = _cache.Open(d);
        var e = await Assert.ThrowsAnyAsync<IOException>(() => _fetcher.EnsureAsync(blob, loc, "weights.bin", 0, Chunk, FetchPriority.Demand, default).AsTask());
        Assert.Contains("does not match its SHA-256", e.Message);
        Assert.Equal(4, _store.Calls); // MaxAttempts
        Assert.False(blob.IsServable(0));
        Assert.Equal(0, blob.ServableChunks);
        _cache.Release(blob);
        Restart(); // after a restart nothing of it is trusted either
        var reopened = _cache.Open(d);
        Assert.Equal(0, reopened.ServableChunks);
        _cache.Release(reopened);
    }

    [Theory]
    [InlineData(Fault.NotFound, "HTTP 404")]
    [InlineData(Fault.Forbidden, "HTTP 403")]
    public async Task NotFoundAndForbiddenFailAtOnce(Fault fault, string status)
    {
        var (d, loc) = Put("a", Bytes(Chunk, 6));
        _store.Faults = _ => fault;
        var blob = _cache.Open(d);
        var e = await Assert.ThrowsAnyAsync<IOException>(() => _fetcher.EnsureAsync(blob, loc, "a", 0, 10, FetchPriority.Demand, default).AsTask());
        Assert.Contains(status, e.Message);
        Assert.Equal(1, _store.Calls);
        _cache.Release(blob);
    }

    [Fact]
    public async Task VerifiedChunksSurviveARestartAndAreNotFetchedAgain()
    {
        var bytes = Bytes(5 * Chunk + 3, 7);
        var (d, loc) = Put("a", bytes);
        var blob = _cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "a", Chunk, 2 * Chunk, FetchPriority.Demand, default);
        _cache.Release(blob);
        _fetcher.Dispose();
        _cache.Dispose();

        _cache = new BlobCache(_cacheDir.FullName, 1L << 30, NullLogger.Instance);
        _fetcher = NewFetcher();
        int callsBefore = _store.Calls;
        var reopened = _cache.Open(d);
        Assert.True(reopened.IsRecorded(1) && reopened.IsRecorded(2)); // known from the record, checked on first use
        Assert.False(reopened.IsRecorded(0));
        await _fetcher.EnsureAsync(reopened, loc, "a", Chunk, 2 * Chunk, FetchPriority.Demand, default);
        Assert.Equal(callsBefore, _store.Calls);
        await _fetcher.EnsureAsync(reopened, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        Assert.Equal(bytes, ReadAll(reopened));
        _cache.Release(reopened);
    }

    [Fact]
    public async Task SeedFormatMismatchPoisonsTheFileAndDropsIt()
    {
        var bytes = Bytes(2 * Chunk, 8);
        var location = _store.Put("bad", bytes);
        var d = new BlobDescriptor(new string('a', 64), bytes.Length, Chunk, null); // sha256 that cannot match
        var blob = _cache.Open(d);
        // The check runs as the last byte lands: the read that waits for it may already see the failure.
        try { await _fetcher.EnsureAsync(blob, location, "bad", 0, bytes.Length, FetchPriority.Demand, default); }
        catch (ChunkVerificationException) { }
        await Assert.ThrowsAsync<ChunkVerificationException>(() => blob.WholeVerified.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.NotNull(blob.Poison);
        Assert.Contains("dropped, never cached", blob.Poison!.Message);
        await Assert.ThrowsAsync<ChunkVerificationException>(() => _fetcher.EnsureAsync(blob, location, "bad", 0, 1, FetchPriority.Demand, default).AsTask());
        _cache.Release(blob);
        Restart();
        var reopened = _cache.Open(d);
        Assert.False(reopened.IsComplete);
        Assert.Equal(0, reopened.ServableChunks);
        _cache.Release(reopened);
    }

    [Fact]
    public async Task UnverifiedSeedDataIsNotTrustedAfterARestart()
    {
        var bytes = Bytes(4 * Chunk, 9);
        var (d, loc) = Put("seed", bytes, chunked: false);
        var blob = _cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "seed", 0, Chunk, FetchPriority.Demand, default); // one of four chunks
        Assert.True(blob.IsServable(0));
        _cache.Release(blob);
        Restart();
        var reopened = _cache.Open(d);
        Assert.False(reopened.IsServable(0));
        Assert.False(reopened.IsRecorded(0));
        _cache.Release(reopened);
    }

    [Fact]
    public async Task RecordSurvivesGarbageAndAWrongSizedDataFileResets()
    {
        var bytes = Bytes(3 * Chunk, 10);
        var (d, loc) = Put("a", bytes);
        var blob = (ChunkedBlob)_cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        string record = blob.RecordPath, data = blob.DataPath;
        _cache.Release(blob);

        Restart();
        await File.AppendAllTextAsync(record, "garbage!"); // a torn append: half an entry
        var again = _cache.Open(d);
        Assert.True(again.AllRecorded);
        int callsBefore = _store.Calls;
        await _fetcher.EnsureAsync(again, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        Assert.True(again.IsComplete);
        Assert.Equal(callsBefore, _store.Calls);
        _cache.Release(again);

        Restart();
        File.WriteAllBytes(data, new byte[10]); // truncated data file: nothing can be trusted
        var reset = _cache.Open(d);
        Assert.Equal(0, reset.ServableChunks);
        await _fetcher.EnsureAsync(reset, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        Assert.Equal(bytes, ReadAll(reset));
        _cache.Release(reset);
    }

    [Fact]
    public async Task CacheFilesArePrivate()
    {
        var (d, loc) = Put("a", Bytes(10, 11));
        var blob = (ChunkedBlob)_cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "a", 0, 10, FetchPriority.Demand, default);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(blob.DataPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(blob.RecordPath));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(_cacheDir.FullName));
        _cache.Release(blob);
    }

    /// <summary>
    /// Chunk-level eviction: the cache stays under its bound while file after file is fetched; a chunk inside
    /// an open file's read-ahead window (its guard) is never dropped; a chunk outside every window may be,
    /// and reading it again fetches and verifies it again, byte-exact.
    /// </summary>
    [Fact]
    public async Task EvictionKeepsTheCacheUnderItsBoundAndNeverDropsAGuardedChunk()
    {
        _fetcher.Dispose();
        _cache.Dispose();
        _cache = new BlobCache(_cacheDir.FullName, 3 * Chunk + 8192, NullLogger.Instance);
        _fetcher = NewFetcher();
        var guardedBytes = Bytes(Chunk, 20);
        var guarded = Put("guarded", guardedBytes);
        var guardedBlob = (ChunkedBlob)_cache.Open(guarded.Descriptor);
        var window = new ReadAheadGuard();
        window.Set(0, Chunk);
        guardedBlob.AddGuard(window);
        await _fetcher.EnsureAsync(guardedBlob, guarded.Location, "guarded", 0, Chunk, FetchPriority.Demand, default);
        var loneBytes = Bytes(Chunk, 21);
        var lone = Put("lone", loneBytes);
        var loneBlob = (ChunkedBlob)_cache.Open(lone.Descriptor); // open, but no reader window covers it
        await _fetcher.EnsureAsync(loneBlob, lone.Location, "lone", 0, Chunk, FetchPriority.Demand, default);

        for (int i = 0; i < 6; i++)
        {
            var (d, loc) = Put($"f{i}", Bytes(Chunk, 30 + i));
            var blob = _cache.Open(d);
            await _fetcher.EnsureAsync(blob, loc, $"f{i}", 0, Chunk, FetchPriority.Demand, default);
            // A fetch returns once its chunk is staged (readers are answered); its write lands after. Wait for that
            // event (one-minute deadline), so a slow machine cannot leave several writes in flight at once.
            var landed = System.Diagnostics.Stopwatch.StartNew();
            while (!blob.IsComplete && landed.Elapsed < TimeSpan.FromMinutes(1)) await Task.Delay(10);
            _cache.Release(blob);
            // Within the bound plus what is in flight: this file's write may have needed room the next fetch makes.
            Assert.True(_cache.UsedBytes <= _cache.Capacity + Chunk, $"after file {i}: {_cache.UsedBytes} > {_cache.Capacity} + one chunk in flight");
        }

        Assert.True(guardedBlob.IsComplete, "the guarded chunk was evicted");
        Assert.Equal(guardedBytes, ReadAll(guardedBlob));
        Assert.Equal(0, loneBlob.StoredChunks); // the oldest unguarded chunk went first
        int callsBefore = _store.Calls;
        await _fetcher.EnsureAsync(loneBlob, lone.Location, "lone", 0, Chunk, FetchPriority.Demand, default);
        Assert.Equal(callsBefore + 1, _store.Calls);
        Assert.Equal(loneBytes, ReadAll(loneBlob));
        guardedBlob.RemoveGuard(window);
        _cache.Release(guardedBlob);
        _cache.Release(loneBlob);
    }

    [Fact]
    public async Task ACacheFileDamagedOnDiskIsDetectedAndThatChunkFetchedAgain()
    {
        var bytes = Bytes(4 * Chunk, 12);
        var (d, loc) = Put("a", bytes);
        var blob = _cache.Open(d);
        await _fetcher.EnsureAsync(blob, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        string data = blob.DataPath;
        _cache.Release(blob);
        Restart();

        using (var handle = File.OpenHandle(data, FileMode.Open, FileAccess.ReadWrite))
            RandomAccess.Write(handle, new byte[] { (byte)(bytes[2 * Chunk + 77] ^ 0x01) }, 2 * Chunk + 77); // bit rot in chunk 2

        var reopened = _cache.Open(d);
        int callsBefore = _store.Calls;
        await _fetcher.EnsureAsync(reopened, loc, "a", 0, bytes.Length, FetchPriority.Demand, default);
        Assert.Equal(bytes, ReadAll(reopened));           // never the damaged byte
        Assert.Equal(1, reopened.DamagedChunks);
        Assert.Equal(callsBefore + 1, _store.Calls);       // only chunk 2 crossed the network again
        Assert.Equal(Chunk, _store.Requests[^1].Length);
        _cache.Release(reopened);
    }
}
