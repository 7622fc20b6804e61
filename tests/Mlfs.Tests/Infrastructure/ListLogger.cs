using Microsoft.Extensions.Logging;

namespace Mlfs.Tests.Infrastructure;

/// <summary>Captures every log line (formatted) so tests can assert on messages and on what must never appear.</summary>
public sealed class ListLogger : ILogger
{
    private readonly List<string> _lines = [];

    public IReadOnlyList<string> Lines
    {
        get { lock (_lines) return [.. _lines]; }
    }

    public string All => string.Join('\n', Lines);

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        string line = $"{logLevel}: {formatter(state, exception)}{(exception is null ? "" : " | " + exception)}";
        lock (_lines) _lines.Add(line);
    }
}
