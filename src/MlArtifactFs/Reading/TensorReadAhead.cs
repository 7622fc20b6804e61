namespace MlArtifactFs.Reading;

/// <summary>
/// Read-ahead in the order a model's tensors are loaded (safetensors, GGUF; see <see cref="TensorLayout"/>),
/// per open handle. An mmap loader's page faults jump around the file when the model's order is not the
/// file's (safetensors writers sort tensors by name: "layers.10" before "layers.2"), which defeats
/// sequential read-ahead; here each access is placed in load order instead, and while the reader keeps
/// moving forward in it the next tensors are fetched ahead, the window doubling up to its cap (the same
/// budget as sequential read-ahead). A reader that jumps (random reads) drops the window; one that leaves
/// tensors mostly unread (a tensor-parallel rank reading its slice of each) gets no tensor read-ahead at
/// all, so it never fetches what it does not touch. READs that continue where the last one ended are the
/// kernel's own read-ahead in file order: they are not taken as the reader's moves.
/// Thread-safe: READs of one handle arrive on several reader threads.
/// </summary>
public sealed class TensorReadAhead(TensorLayout layout, long minBytes, long maxBytes)
{
    /// <summary>A READ this close to where the last one ended continues it (reordered kernel read-ahead).</summary>
    private const long ContinuationTolerance = 4L << 20;

    /// <summary>After this many tensors left mostly unread, the reader is taken for a partial one.</summary>
    private const int PartialTensorsToStop = 2;

    private readonly Lock _lock = new();
    private long _lastEnd = -1;     // guarded by _lock: where the previous READ ended
    private int _current = -1;      // guarded by _lock: load position of the tensor the reader is in
    private long _currentRead;      // guarded by _lock: bytes read in it
    private int _cursor;            // guarded by _lock: the first tensor (load position) not requested yet
    private long _window;           // guarded by _lock
    private int _partial;           // guarded by _lock

    public long Window { get { lock (_lock) return _window; } }

    /// <summary>Records a READ; returns the byte ranges to fetch ahead, in load order (empty for none).</summary>
    public List<(long Offset, long Length)> OnRead(long offset, long length)
    {
        var ahead = new List<(long, long)>();
        lock (_lock)
        {
            bool continues = _lastEnd >= 0 && Math.Abs(offset - _lastEnd) <= ContinuationTolerance;
            _lastEnd = Math.Max(_lastEnd, offset + length);
            int t = layout.At(offset);
            if (t < 0) return ahead;
            if (t == _current)
            {
                _currentRead += Math.Min(length, layout.End(t) - offset);
            }
            else if (!continues)
            {
                if (_current >= 0 && _currentRead < layout.Length(_current) / 2) _partial++;
                bool forward = t == _current + 1 || (t > _current && t < _cursor);
                _window = forward && _current >= 0 ? Math.Min(Math.Max(_window * 2, minBytes), maxBytes) : _current < 0 ? minBytes : 0;
                if (_window == 0 || t >= _cursor) _cursor = t + 1;
                _current = t;
                _currentRead = Math.Min(length, layout.End(t) - offset);
            }
            if (_partial >= PartialTensorsToStop || _window == 0 || _current < 0) return ahead;
            // Request whole tensors in load order until the window's worth lies ahead of the reader's tensor.
            long requested = 0;
            for (int p = _current + 1; p < _cursor; p++) requested += layout.Length(p);
            while (_cursor < layout.Count && requested < _window)
            {
                ahead.Add((layout.Start(_cursor), layout.Length(_cursor)));
                requested += layout.Length(_cursor);
                _cursor++;
            }
        }
        return ahead;
    }
}
