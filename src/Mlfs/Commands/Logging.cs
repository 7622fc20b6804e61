using Microsoft.Extensions.Logging;

namespace Mlfs.Commands;

internal static class Logging
{
    /// <summary>Logs go to stderr (stdout carries the ready line and command output).</summary>
    public static ILoggerFactory Create(string level) => LoggerFactory.Create(builder => builder
        .SetMinimumLevel(ParseLevel(level))
        .AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
            o.IncludeScopes = false;
        })
        .AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace));

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
