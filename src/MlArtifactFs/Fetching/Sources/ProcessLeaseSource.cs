using MlArtifactFs.Index;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching.Sources;

/// <summary>
/// The second tier: processes sharing the cache directory fetch a cold chunk once. For each chunk this
/// run takes the chunk index's fetch lease (with Redis: across processes; without: always granted) and
/// passes it on down the chain; a chunk another process holds the lease for is set aside and awaited
/// (bounded by the lease time) once this run fetched its own, then adopted after hashing. Leases go
/// when the run ends. Single flight across processes is an optimisation: correctness rests on hashing.
/// </summary>
internal sealed class ProcessLeaseSource(IChunkIndex index, ChunkSink sink, CounterSet counters, CancellationToken shutdown) : IChunkSource
{
    /// <summary>How long another process may hold a chunk's fetch lease (a crashed holder frees it by expiry).</summary>
    private static readonly TimeSpan LeaseTime = TimeSpan.FromSeconds(30);

    private static string Key(ChunkJob job, int chunk) => $"{job.Blob.Name}:{chunk}";

    public async Task FetchAsync(ChunkJob job)
    {
        var theirs = new List<int>();
        var adopted = new List<int>();
        foreach (int c in job.Missing)
        {
            string key = Key(job, c);
            if (!await index.TryLeaseAsync(key, LeaseTime).ConfigureAwait(false))
            {
                theirs.Add(c);
                continue;
            }
            job.AtEnd(() => index.ReleaseLease(key));
            job.Blob.Refresh(); // the lease may be free because its holder just finished: look again before fetching
            if (sink.TryAdopt(job.Blob, c, job.FileName))
            {
                job.Run.ChunkReady(c);
                adopted.Add(c);
            }
        }
        job.Missing.RemoveAll(adopted.Contains);
        if (theirs.Count == 0) return;
        counters.Add(Counters.ChunksFromOtherProcesses, theirs.Count);
        job.Defer(this, theirs);
    }

    /// <summary>Waits (bounded by the lease time) for chunks another process is fetching into the shared cache; returns those that never arrived.</summary>
    public async Task<List<int>> AwaitDeferredAsync(ChunkJob job, List<int> chunks)
    {
        var deadline = DateTime.UtcNow + LeaseTime;
        var pending = new List<int>(chunks);
        TakeArrived();
        while (pending.Count > 0 && DateTime.UtcNow < deadline)
        {
            // The other process may have finished or given up (lease gone): then fetch what is left ourselves.
            bool anyFree = false;
            foreach (int c in pending)
                if (await index.TryLeaseAsync(Key(job, c), TimeSpan.FromMilliseconds(1)).ConfigureAwait(false)) anyFree = true;
            await Task.Delay(anyFree ? 0 : 20, shutdown).ConfigureAwait(false);
            TakeArrived();
            if (anyFree) break;
        }
        return pending;

        void TakeArrived()
        {
            job.Blob.Refresh();
            pending.RemoveAll(c =>
            {
                if (!sink.TryAdopt(job.Blob, c, job.FileName)) return false;
                job.Run.ChunkReady(c);
                return true;
            });
        }
    }
}
