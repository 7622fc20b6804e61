using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Logs;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace MlArtifactFs.ServiceDefaults;

/// <summary>
/// What every mlfs service shares, the way Aspire's ServiceDefaults does it: logs to stderr, and —
/// only when OTEL_EXPORTER_OTLP_ENDPOINT is set (the Aspire AppHost sets it) — logs, traces and
/// metrics over OTLP, with runtime metrics. The standard OTEL_* variables configure the exporter.
/// </summary>
public sealed class Observability : IDisposable
{
    private readonly TracerProvider? _tracer;
    private readonly MeterProvider? _meter;

    private Observability(ILoggerFactory loggers, TracerProvider? tracer, MeterProvider? meter)
    {
        LoggerFactory = loggers;
        _tracer = tracer;
        _meter = meter;
    }

    public ILoggerFactory LoggerFactory { get; }

    public static bool OtlpConfigured => !string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT"));

    /// <param name="serviceName">Used unless OTEL_SERVICE_NAME is set.</param>
    /// <param name="sources">ActivitySource and Meter names to export.</param>
    public static Observability Start(string serviceName, LogLevel level, params string[] sources)
    {
        bool otlp = OtlpConfigured;
        var resource = ResourceBuilder.CreateDefault().AddService(Environment.GetEnvironmentVariable("OTEL_SERVICE_NAME") ?? serviceName);
        var loggers = Microsoft.Extensions.Logging.LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(level)
                .AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                })
                .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            if (otlp)
                builder.AddOpenTelemetry(o =>
                {
                    o.SetResourceBuilder(resource);
                    o.IncludeFormattedMessage = true;
                    o.AddOtlpExporter();
                });
        });
        if (!otlp) return new Observability(loggers, null, null);
        var tracer = Sdk.CreateTracerProviderBuilder().SetResourceBuilder(resource).AddSource(sources).AddOtlpExporter().Build();
        var meter = Sdk.CreateMeterProviderBuilder().SetResourceBuilder(resource).AddMeter(sources).AddRuntimeInstrumentation().AddOtlpExporter().Build();
        return new Observability(loggers, tracer, meter);
    }

    public void Dispose()
    {
        _tracer?.ForceFlush(2000);
        _meter?.ForceFlush(2000);
        _tracer?.Dispose();
        _meter?.Dispose();
        LoggerFactory.Dispose();
    }
}
