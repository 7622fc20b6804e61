namespace MlArtifactFs.Reading;

/// <summary>
/// Per open handle: detects sequential reading and grows how far ahead we fetch. A READ that
/// starts near where the last one ended doubles the window (min -> max); anything else drops it to
/// zero, so random readers fetch only what they touch. "Near" tolerates the reordering of the
/// kernel's asynchronous read-ahead (several 1 MiB READs in flight on several threads).
/// Thread-safe: READs of one handle arrive on several reader threads.
/// </summary>
public sealed class ReadAheadWindow(long minBytes, long maxBytes)
{
    /// <summary>How far out of order a READ may arrive and still count as sequential (4 READs of 1 MiB).</summary>
    private const long ReorderTolerance = 4L << 20;

    private readonly Lock _lock = new();
    private long _next = -1;   // guarded by _lock
    private long _window;      // guarded by _lock

    public long Window { get { lock (_lock) return _window; } }

    /// <summary>Records a READ; returns the range to fetch ahead (length 0 for none).</summary>
    public (long Offset, long Length) OnRead(long offset, long length)
    {
        lock (_lock)
        {
            bool sequential = (_next < 0 && offset == 0)
                              || (_next >= 0 && offset >= _next - ReorderTolerance && offset <= _next + ReorderTolerance);
            if (!sequential)
            {
                _window = 0;
                _next = offset + length;
                return (0, 0);
            }
            _window = _window == 0 ? minBytes : Math.Min(_window * 2, maxBytes);
            _next = Math.Max(_next, offset + length);
            return (_next, _window);
        }
    }
}
