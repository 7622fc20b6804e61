using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MlArtifactFs.Telemetry;

/// <summary>
/// Names and instruments for OpenTelemetry: one ActivitySource (a span per fetch and per mount
/// phase) and one Meter. Exporters are wired by the host (the CLI, ServiceDefaults); with none,
/// these cost almost nothing.
/// </summary>
public static class MlfsTelemetry
{
    public const string Name = "MlArtifactFs";

    public static readonly ActivitySource Source = new(Name);
    public static readonly Meter Meter = new(Name);

    public static readonly Counter<long> BytesFetched = Meter.CreateCounter<long>("mlfs.fetch.bytes", "By", "Bytes received, by source (mlfs.source: origin = object storage, peer = another mount)");
    public static readonly Counter<long> CacheHits = Meter.CreateCounter<long>("mlfs.cache.hits", "{read}", "Reads served from the disk cache without waiting");
    public static readonly Counter<long> CacheMisses = Meter.CreateCounter<long>("mlfs.cache.misses", "{read}", "Reads that waited for a fetch");
    public static readonly Histogram<double> FetchDuration = Meter.CreateHistogram<double>("mlfs.fetch.duration", "s", "Duration of one ranged GET, headers to last byte");
    public static readonly UpDownCounter<long> FetchesInFlight = Meter.CreateUpDownCounter<long>("mlfs.fetch.in_flight", "{request}", "Ranged GETs in progress");
    public static readonly Counter<long> Errors = Meter.CreateCounter<long>("mlfs.errors", "{error}", "Failures by kind (transient, not_found, access_denied, bad_response, verification, io)");
    /// <summary>Disk bytes the cache holds, reported by whoever registered a provider (the mount).</summary>
    public static Func<long>? CacheBytesProvider { get; set; }
    public static readonly ObservableGauge<long> CacheBytes = Meter.CreateObservableGauge("mlfs.cache.bytes",
        () => CacheBytesProvider?.Invoke() ?? 0, "By", "Bytes the disk cache holds (allocated blocks)");
    /// <summary>
    /// Starts a span under <paramref name="parent"/> (none: a new trace) without making it the current one,
    /// so whatever the caller does next is not mistaken for part of it.
    /// </summary>
    public static Activity? StartDetached(string name, ActivityContext parent)
    {
        var previous = Activity.Current;
        Activity.Current = null; // with no parent given, StartActivity would take the current span as one
        var activity = Source.StartActivity(name, ActivityKind.Internal, parent);
        Activity.Current = previous;
        return activity;
    }

    public static readonly Counter<long> UnverifiedBytesServed = Meter.CreateCounter<long>("mlfs.read.unverified_bytes", "By", "Bytes of seed-format files served before their whole-file check");
}

/// <summary>Per-mount totals, for `mlfs status` (the Meter aggregates across mounts in one process).</summary>
public sealed class FetchStatistics
{
    public long ChunksFetched;
    public long BytesFetched;
    public long Requests;
    public long Retries;
    public long Failures;
    public long CacheHits;
    public long CacheMisses;
    public long UnverifiedBytesServed;
    public long ChunksDeduplicated;
    public long BytesDeduplicated;
    public long ChunksFromOtherProcesses;
    // Fleet mode
    public long ChunksFromPeers;
    public long BytesFromPeers;
    public long PeerFailures;
    public long FleetWaits;
    public long FleetHedges;

    public double HitRatio
    {
        get
        {
            long hits = Interlocked.Read(ref CacheHits), misses = Interlocked.Read(ref CacheMisses);
            return hits + misses == 0 ? 0 : (double)hits / (hits + misses);
        }
    }
}
