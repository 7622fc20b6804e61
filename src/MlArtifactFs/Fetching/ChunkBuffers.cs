namespace MlArtifactFs.Fetching;

/// <summary>
/// The one budget for chunk-sized buffers: every chunk is hashed in memory before it may be written
/// to a shared cache file, so each fetch, dedup copy and uncached read holds a buffer of up to a
/// chunk (64 MiB at most). Rents wait while the budget is spent, so memory stays bounded for any
/// manifest and any number of readers; a single rent larger than the whole budget is charged the
/// whole budget (it runs alone). The arrays are its own, not the shared pool's: buffers in use plus
/// buffers kept for reuse never exceed the budget (the shared pool kept returned 64 MiB arrays on top
/// of it: a cold read with 64 MiB chunks peaked at 455 MiB).
/// </summary>
public sealed class ChunkBuffers(long budgetBytes)
{
    private readonly Lock _lock = new();
    private readonly LinkedList<(long Charge, TaskCompletionSource Ready)> _waiting = []; // guarded by _lock
    private long _available = budgetBytes;                                                // guarded by _lock
    private readonly List<byte[]> _kept = [];                                             // guarded by _lock
    private long _keptBytes;                                                              // guarded by _lock

    public long Budget { get; } = budgetBytes;

    /// <summary>A rented buffer; dispose to give it and its charge back.</summary>
    public sealed class Rental(ChunkBuffers owner, byte[] array, int length, long charge) : IDisposable
    {
        private int _returned;
        public byte[] Array { get; } = array;
        public Memory<byte> Memory => Array.AsMemory(0, length);

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _returned, 1) != 0) return;
            owner.Give(Array, charge);
        }
    }

    public async ValueTask<Rental> RentAsync(int length, CancellationToken cancel)
    {
        long charge = Math.Min(length, Budget);
        TaskCompletionSource? ready = null;
        LinkedListNode<(long, TaskCompletionSource)>? node = null;
        lock (_lock)
        {
            if (_waiting.Count == 0 && _available >= charge) _available -= charge;
            else
            {
                ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                node = _waiting.AddLast((charge, ready));
            }
        }
        if (ready is not null)
        {
            try { await ready.Task.WaitAsync(cancel).ConfigureAwait(false); }
            catch (OperationCanceledException)
            {
                bool granted;
                lock (_lock)
                {
                    granted = node!.List is null; // already handed its charge
                    if (!granted) _waiting.Remove(node);
                }
                if (granted) Give(null, charge);
                throw;
            }
        }
        return new Rental(this, Take(length), length, charge);
    }

    /// <summary>A kept array that fits (the smallest), else a new one; kept arrays are dropped first so kept + in use stays within the budget.</summary>
    private byte[] Take(int length)
    {
        lock (_lock)
        {
            int best = -1;
            for (int i = 0; i < _kept.Count; i++)
                if (_kept[i].Length >= length && (best < 0 || _kept[i].Length < _kept[best].Length)) best = i;
            if (best >= 0 && _kept[best].Length <= 2L * length)
            {
                var array = _kept[best];
                _kept.RemoveAt(best);
                _keptBytes -= array.Length;
                return array;
            }
            // Room for a new one: in use (Budget - _available, already charged) + kept + new <= Budget + one array.
            while (_kept.Count > 0 && Budget - _available + _keptBytes > Budget - length)
            {
                _keptBytes -= _kept[^1].Length;
                _kept.RemoveAt(_kept.Count - 1);
            }
        }
        return GC.AllocateUninitializedArray<byte>(length);
    }

    private void Give(byte[]? array, long charge)
    {
        List<TaskCompletionSource>? wake = null;
        lock (_lock)
        {
            _available += charge;
            // Keep it for the next rent while in use + kept stays within the budget; else let it go.
            if (array is not null && Budget - _available + _keptBytes + array.Length <= Budget)
            {
                _kept.Add(array);
                _keptBytes += array.Length;
            }
            // First come, first served: a big rent at the head is not starved by small ones behind it.
            while (_waiting.First is { } first && _available >= first.Value.Charge)
            {
                _available -= first.Value.Charge;
                _waiting.RemoveFirst();
                (wake ??= []).Add(first.Value.Ready);
            }
        }
        if (wake is not null) foreach (var w in wake) w.TrySetResult();
    }
}
