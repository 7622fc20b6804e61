using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fetching.Sources;
using MlArtifactFs.Fleet;
using MlArtifactFs.Index;
using MlArtifactFs.Reading;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Mounting;

/// <summary>
/// The fetch path of one mount, composed in one place: the scheduler (<see cref="ChunkFetcher"/>), the
/// chain of chunk sources a cold chunk tries in order, the one sink every verified chunk goes through,
/// whole-file fetches (seed format), uncached reads (full disk) and the checks a blob gets when opened.
/// </summary>
public sealed class FetchPath : IDisposable
{
    public ChunkFetcher Fetcher { get; private init; } = null!;
    internal UncachedRead Uncached { get; private init; } = null!;
    internal CachedFileChecks Checks { get; private init; } = null!;
    /// <summary>The tensor layouts of model files being read (for read-ahead in load order).</summary>
    internal TensorLayouts Layouts { get; } = new();

    public static FetchPath Compose(IObjectStore store, BlobCache cache, FetcherOptions options, CounterSet counters, ILogger logger,
        IChunkIndex? index = null, FleetMember? fleet = null)
    {
        index ??= new LocalChunkIndex();
        // Read-ahead is kept from eviction until it is read, and what is in flight counts against the bound:
        // a small cache gets a window of a quarter of it (in requests of an eighth), so the rest can be evicted.
        long request = Math.Min(options.MaxRequestBytes, Math.Max(cache.Capacity / 8, 1L << 20));
        options = options with
        {
            MaxRequestBytes = request,
            MaxReadAheadBytes = Math.Min(options.MaxReadAheadBytes, Math.Max(cache.Capacity / 4, request)),
        };
        var shutdown = new CancellationTokenSource();
        var range = new RangeReader(store, options, counters, logger, shutdown.Token);
        var memory = new ChunkMemory(options.BufferBudgetBytes);
        var sink = new ChunkSink(index, counters, logger) { Holders = fleet };
        List<IChunkSource> sources =
        [
            new LocalCacheSource(cache, index, sink, counters),             // 1. on disk already: adopted after hashing, or an identical chunk copied
            new ProcessLeaseSource(index, sink, counters, shutdown.Token),  // 2. another process on this cache is fetching it: wait, then adopt
        ];
        if (fleet is not null) sources.Add(fleet.CreateSource(sink, counters, shutdown.Token)); // 3. a peer holds it, or another node is fetching it
        sources.Add(new StorageSource(range, sink, counters, logger));      // 4. object storage
        var fetcher = new ChunkFetcher(cache, new SourceChain(sources), new WholeFileFetch(cache, range, counters, logger), memory, options,
            counters, logger, shutdown);
        Action<ChunkedBlob, int, long> evicted = (blob, chunk, _) => index.Remove(blob.Name, chunk, blob.Descriptor.ChunkId(chunk));
        cache.ChunkEvicted += evicted;
        return new FetchPath
        {
            _unsubscribe = () => cache.ChunkEvicted -= evicted,
            Fetcher = fetcher,
            Uncached = new UncachedRead(range, memory, counters),
            Checks = new CachedFileChecks(cache, index, sink, shutdown.Token),
        };
    }

    private Action? _unsubscribe;

    public void Dispose()
    {
        _unsubscribe?.Invoke();
        Fetcher.Dispose();
    }
}
