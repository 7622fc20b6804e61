using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace MlArtifactFs.Telemetry;

/// <summary>
/// Names and instruments for OpenTelemetry: one ActivitySource (a span per fetch and per mount
/// phase) and one Meter. Counters are defined once in <see cref="Counters"/> and observed from the
/// mounts' <see cref="CounterSet"/>s; the two instruments here are not counters. Exporters are wired
/// by the host (the CLI, ServiceDefaults); with none, these cost almost nothing.
/// </summary>
public static class MlfsTelemetry
{
    public const string Name = "MlArtifactFs";

    public static readonly ActivitySource Source = new(Name);
    public static readonly Meter Meter = CreateMeter();

    private static Meter CreateMeter()
    {
        var meter = new Meter(Name);
        Counters.Export(meter);
        return meter;
    }

    public static readonly Histogram<double> FetchDuration = Meter.CreateHistogram<double>("mlfs.fetch.duration", "s", "Duration of one ranged GET, headers to last byte");
    public static readonly UpDownCounter<long> FetchesInFlight = Meter.CreateUpDownCounter<long>("mlfs.fetch.in_flight", "{request}", "Fetch runs in progress");

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
}
