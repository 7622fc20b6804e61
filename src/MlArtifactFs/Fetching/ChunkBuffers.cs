using System.Buffers;

namespace MlArtifactFs.Fetching;

/// <summary>
/// The one budget for chunk-sized buffers: every chunk is hashed in memory before it may be written
/// to a shared cache file, so each fetch, dedup copy and uncached read holds a buffer of up to a
/// chunk (64 MiB at most). Rents wait while the budget is spent, so memory stays bounded for any
/// manifest and any number of readers; a single rent larger than the whole budget is charged the
/// whole budget (it runs alone). Buffers come from the shared array pool.
/// </summary>
public sealed class ChunkBuffers(long budgetBytes)
{
    private readonly Lock _lock = new();
    private readonly LinkedList<(long Charge, TaskCompletionSource Ready)> _waiting = []; // guarded by _lock
    private long _available = budgetBytes;                                                // guarded by _lock

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
            ArrayPool<byte>.Shared.Return(Array);
            owner.Give(charge);
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
                if (granted) Give(charge);
                throw;
            }
        }
        return new Rental(this, ArrayPool<byte>.Shared.Rent(length), length, charge);
    }

    private void Give(long charge)
    {
        List<TaskCompletionSource>? wake = null;
        lock (_lock)
        {
            _available += charge;
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
