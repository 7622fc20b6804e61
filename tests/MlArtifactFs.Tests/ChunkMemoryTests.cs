using MlArtifactFs.Cache;
using Xunit;

namespace MlArtifactFs.Tests;

public class ChunkMemoryTests
{
    private sealed class KeptChunk(ChunkBuffer buffer) : ChunkMemory.Resident
    {
        public int Released;
        public override void Release()
        {
            Interlocked.Increment(ref Released);
            buffer.Dispose();
        }
    }

    /// <summary>
    /// The budget is spent on buffers in flight, a third rent queues, then the buffers turn resident (stored,
    /// kept to serve reads) instead of coming back: the queued rent must get one of them, not wait forever.
    /// (Sixteen 64 MiB single-chunk files read at once hung the daemon this way.)
    /// </summary>
    [Fact]
    public async Task ARentQueuedWhileEveryBufferIsInFlightIsServedOnceOneTurnsResident()
    {
        const int size = 4 << 20;
        using var memory = new ChunkMemory(2L * size);
        var first = await memory.RentAsync(size, default);
        var second = await memory.RentAsync(size, default);
        var third = memory.RentAsync(size, default).AsTask();
        Assert.False(third.IsCompleted, "a rent past the budget waits");

        var kept = new[] { new KeptChunk(first), new KeptChunk(second) };
        memory.AddResident(kept[0]);
        memory.AddResident(kept[1]);
        var granted = await third.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(1, kept.Sum(k => k.Released));
        Assert.Equal(2L * size, memory.InUse);
        granted.Dispose();
    }

    [Fact]
    public async Task ResidentBuffersAreLetGoForNewRentsConsumedOnesFirst()
    {
        const int size = 4 << 20;
        using var memory = new ChunkMemory(2L * size);
        var a = new KeptChunk(await memory.RentAsync(size, default));
        var b = new KeptChunk(await memory.RentAsync(size, default));
        memory.AddResident(a);
        memory.AddResident(b);
        memory.MarkConsumed(b);
        using var next = await memory.RentAsync(size, default);
        Assert.Equal((0, 1), (a.Released, b.Released));
    }
}
