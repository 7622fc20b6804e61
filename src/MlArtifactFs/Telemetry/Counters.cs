using System.Diagnostics.Metrics;

namespace MlArtifactFs.Telemetry;

/// <summary>
/// One counter of a mount, defined once (mountpoint-s3's metrics/defs.rs): the key `mlfs status --json`
/// shows it under (null: exported only), and the metric (with its attribute) the Meter exports it as.
/// Several counters may share a metric with different attributes (bytes from storage and from peers).
/// </summary>
public sealed record Counter(string? StatusKey, string Metric, string Unit, string Description, KeyValuePair<string, object?>? Tag)
{
    /// <summary>Its slot in every <see cref="CounterSet"/>.</summary>
    internal int Index { get; init; }
}

/// <summary>
/// Every counter mlfs keeps. A counter is added here and nowhere else: `mlfs status` lists it by its
/// key, and the Meter exports it (observed from the same values, so the two never disagree).
/// </summary>
public static class Counters
{
    private static readonly List<Counter> Defined = [];

    private static Counter Define(string? statusKey, string metric, string unit, string description, string? tagName = null, string? tagValue = null)
    {
        var counter = new Counter(statusKey, metric, unit, description, tagName is null ? null : new KeyValuePair<string, object?>(tagName, tagValue))
        {
            Index = Defined.Count,
        };
        Defined.Add(counter);
        return counter;
    }

    // Storage and peers
    public static readonly Counter BytesFetched = Define("bytes_fetched", "mlfs.fetch.bytes", "By", "Bytes received, by source (mlfs.source: origin = object storage, peer = another mount)", "mlfs.source", "origin");
    public static readonly Counter BytesFromPeers = Define("bytes_from_peers", "mlfs.fetch.bytes", "By", "", "mlfs.source", "peer");
    public static readonly Counter ChunksFetched = Define("chunks_fetched", "mlfs.fetch.chunks", "{chunk}", "Chunks fetched (from storage or peers), verified and stored");
    public static readonly Counter Requests = Define("requests", "mlfs.fetch.requests", "{request}", "Ranged GETs sent to storage");
    public static readonly Counter Retries = Define("retries", "mlfs.fetch.retries", "{retry}", "Ranged GETs retried (5xx, resets, stalls, bytes that failed their hash)");
    public static readonly Counter FetchFailures = Define("fetch_failures", "mlfs.fetch.failures", "{run}", "Fetch runs that failed (their readers got EIO, or read uncached)");
    public static readonly Counter ChunksFromPeers = Define("chunks_from_peers", "mlfs.fleet.chunks", "{chunk}", "Chunks fetched from peers (fleet mode)");
    public static readonly Counter PeerFailures = Define("peer_failures", "mlfs.fleet.peer_failures", "{failure}", "Peers that failed, stalled or sent wrong bytes (fleet mode)");
    public static readonly Counter FleetWaits = Define("fleet_waits", "mlfs.fleet.waits", "{chunk}", "Chunks waited for while another node fetched them (fleet mode)");
    public static readonly Counter FleetHedges = Define("fleet_hedges", "mlfs.fleet.hedges", "{chunk}", "Chunks fetched from storage after waiting for another node in vain (fleet mode)");

    // The cache
    public static readonly Counter CacheHits = Define("cache_hits", "mlfs.cache.hits", "{read}", "Reads served from the disk cache without waiting");
    public static readonly Counter CacheMisses = Define("cache_misses", "mlfs.cache.misses", "{read}", "Reads that waited for a fetch");
    public static readonly Counter UnverifiedBytesServed = Define("unverified_bytes_served", "mlfs.read.unverified_bytes", "By", "Bytes of seed-format files served before their whole-file check");
    public static readonly Counter ChunksDeduplicated = Define("chunks_deduplicated", "mlfs.dedup.chunks", "{chunk}", "Chunks copied from an identical cached chunk instead of fetched");
    public static readonly Counter BytesDeduplicated = Define("bytes_deduplicated", "mlfs.dedup.bytes", "By", "Bytes copied from identical cached chunks instead of fetched");
    public static readonly Counter ChunksFromOtherProcesses = Define("chunks_from_other_processes", "mlfs.shared.chunks", "{chunk}", "Chunks another process sharing the cache was fetching when we needed them");
    public static readonly Counter ChunksEvicted = Define("chunks_evicted", "mlfs.cache.evicted_chunks", "{chunk}", "Chunks this mount evicted from the cache (dropped from the record, then punched out) to keep it within its bound");
    public static readonly Counter BlobsEvicted = Define("blobs_evicted", "mlfs.cache.evicted_blobs", "{blob}", "Whole cached files this mount evicted (no process had them open)");
    public static readonly Counter BytesEvicted = Define("bytes_evicted", "mlfs.cache.evicted_bytes", "By", "Disk bytes freed by those evictions");

    // Opens and reads: what the daemon saw, and what the kernel served without it
    public static readonly Counter Opens = Define("opens", "mlfs.opens", "{open}", "Files opened");
    public static readonly Counter PassthroughOpens = Define("passthrough_opens", "mlfs.passthrough.opens", "{open}", "Opens served by FUSE passthrough: the kernel reads the cache file, the daemon sees none of their reads");
    public static readonly Counter PassthroughFileBytes = Define("passthrough_file_bytes", "mlfs.passthrough.file_bytes", "By", "Sizes of the files opened in passthrough: at most what the kernel served of them without the daemon");
    public static readonly Counter BytesRead = Define("bytes_read", "mlfs.read.bytes", "By", "Bytes READs asked the daemon for (within the file)");

    // Failures by kind (mlfs.errors{kind})
    public static readonly Counter ErrorTransient = Error("transient");
    public static readonly Counter ErrorNotFound = Error("not_found");
    public static readonly Counter ErrorAccessDenied = Error("access_denied");
    public static readonly Counter ErrorBadResponse = Error("bad_response");
    public static readonly Counter ErrorRejected = Error("rejected");
    public static readonly Counter ErrorVerification = Error("verification");
    public static readonly Counter ErrorCacheFull = Error("cache_full");
    public static readonly Counter ErrorCacheDamaged = Error("cache_damaged");
    public static readonly Counter ErrorPeer = Error("peer");
    public static readonly Counter ErrorIo = Error("io");

    private static Counter Error(string kind) =>
        Define(null, "mlfs.errors", "{error}", "Failures by kind (transient, not_found, access_denied, bad_response, rejected, verification, cache_full, cache_damaged, peer, io)", "kind", kind);

    public static IReadOnlyList<Counter> All => Defined;

    /// <summary>Registers the observable instruments, one per metric name (called once, by <see cref="MlfsTelemetry"/>).</summary>
    internal static void Export(Meter meter)
    {
        foreach (var metric in Defined.GroupBy(c => c.Metric))
        {
            var counters = metric.ToArray();
            meter.CreateObservableCounter(metric.Key, () => Observe(counters), counters[0].Unit, counters[0].Description);
        }
    }

    private static IEnumerable<Measurement<long>> Observe(Counter[] counters)
    {
        foreach (var counter in counters)
        {
            long total = CounterSet.Total(counter);
            yield return counter.Tag is { } tag ? new Measurement<long>(total, tag) : new Measurement<long>(total);
        }
    }
}

/// <summary>
/// The values of every <see cref="Counters">counter</see> for one mount. `mlfs status` reads them; the
/// Meter observes the sum over every mount of the process (a closed mount's totals stay counted, so
/// exported counters never go down).
/// </summary>
public sealed class CounterSet : IDisposable
{
    private static readonly Lock LiveLock = new();
    private static readonly List<CounterSet> Live = [];                 // guarded by LiveLock
    private static readonly long[] Retired = new long[Counters.All.Count]; // guarded by LiveLock

    private readonly long[] _values = new long[Counters.All.Count];

    public CounterSet()
    {
        lock (LiveLock) Live.Add(this);
    }

    public void Add(Counter counter, long amount) => Interlocked.Add(ref _values[counter.Index], amount);

    public void Increment(Counter counter) => Interlocked.Increment(ref _values[counter.Index]);

    public long this[Counter counter] => Interlocked.Read(ref _values[counter.Index]);

    /// <summary>Hits over the reads the daemon saw; null when it saw none (every read went through passthrough, or none was made).</summary>
    public double? HitRatio
    {
        get
        {
            long hits = this[Counters.CacheHits], misses = this[Counters.CacheMisses];
            return hits + misses == 0 ? null : (double)hits / (hits + misses);
        }
    }

    /// <summary>The share of opens whose reads reach the daemon (the rest the kernel serves by passthrough); null before any open.</summary>
    public double? DaemonOpenShare
    {
        get
        {
            long opens = this[Counters.Opens], passthrough = this[Counters.PassthroughOpens];
            return opens == 0 ? null : (double)(opens - passthrough) / opens;
        }
    }

    /// <summary>Every counter with a status key, by that key (for `mlfs status`).</summary>
    public IEnumerable<KeyValuePair<string, long>> ForStatus() =>
        Counters.All.Where(c => c.StatusKey is not null).Select(c => new KeyValuePair<string, long>(c.StatusKey!, this[c]));

    /// <summary>Failures by kind, those that happened.</summary>
    public IEnumerable<KeyValuePair<string, long>> Errors() =>
        Counters.All.Where(c => c.Metric == "mlfs.errors" && this[c] > 0).Select(c => new KeyValuePair<string, long>((string)c.Tag!.Value.Value!, this[c]));

    internal static long Total(Counter counter)
    {
        lock (LiveLock)
        {
            long total = Retired[counter.Index];
            foreach (var set in Live) total += set[counter];
            return total;
        }
    }

    public void Dispose()
    {
        lock (LiveLock)
        {
            if (!Live.Remove(this)) return;
            for (int i = 0; i < _values.Length; i++) Retired[i] += Interlocked.Read(ref _values[i]);
        }
    }
}
