using System.Runtime.CompilerServices;
using MlArtifactFs.Cache;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Which run is fetching each chunk of a blob right now, so every reader and prefetcher of a chunk
/// in this process shares one fetch. Kept beside the blob, not in it: the cache knows nothing of
/// fetching. Across processes the chunk index's leases do the same job, as an optimisation only.
/// </summary>
internal sealed class SingleFlight
{
    private readonly ConditionalWeakTable<CachedBlob, Flights> _byBlob = new();

    internal sealed class Flights(int chunks)
    {
        /// <summary>Guards <see cref="Runs"/>.</summary>
        public readonly Lock Sync = new();
        public readonly ChunkRun?[] Runs = new ChunkRun?[chunks];
    }

    public Flights For(CachedBlob blob) => _byBlob.GetValue(blob, b => new Flights(b.Descriptor.ChunkCount));

    /// <summary>A run ended: its chunks are no longer in flight (unless another run took them over).</summary>
    public void Finished(ChunkRun run)
    {
        var flights = For(run.Blob);
        lock (flights.Sync)
            for (int c = run.FirstChunk; c <= run.LastChunk; c++)
                if (ReferenceEquals(flights.Runs[c], run)) flights.Runs[c] = null;
    }
}
