using Microsoft.Extensions.Logging;
using MlArtifactFs.ServiceDefaults;
using MlArtifactFs.Telemetry;

namespace Mlfs.Commands;

internal static class Logging
{
    /// <summary>Logs to stderr (stdout carries the ready line and command output); OTLP when configured.</summary>
    public static Observability Start(string level) => Observability.Start("mlfs", ParseLevel(level), MlfsTelemetry.Name);

    public static LogLevel ParseLevel(string level) => level.ToLowerInvariant() switch
    {
        "trace" => LogLevel.Trace,
        "debug" => LogLevel.Debug,
        "info" or "information" => LogLevel.Information,
        "warn" or "warning" => LogLevel.Warning,
        "error" => LogLevel.Error,
        _ => throw new ArgumentException($"--log-level must be trace, debug, info, warning or error, not \"{level}\""),
    };
}
