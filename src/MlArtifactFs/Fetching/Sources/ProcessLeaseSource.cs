using MlArtifactFs.Index;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching.Sources;

/// <summary>
/// The second tier: processes sharing the cache directory fetch a cold chunk once. For each chunk this
/// run takes the chunk index's fetch lease (with Redis: across processes; without: always granted) and
/// passes it on down the chain; a chunk another process holds the lease for is set aside and awaited
/// once this run fetched its own (until it arrives, adopted after hashing, or its lease comes free: a
/// holder that dies loses its lease by expiry). Leases go
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

    /// <summary>
    /// Waits for chunks another process is fetching into the shared cache. A chunk whose lease comes free
    /// without the chunk (its holder gave up, died, or its lease expired) is leased by this run and returned
    /// at once, to be fetched down the chain; the others are set aside again, so one free lease never
    /// sends chunks still being fetched elsewhere to storage a second time.
    /// </summary>
    public async Task<List<int>> AwaitDeferredAsync(ChunkJob job, List<int> chunks)
    {
        var pending = new List<int>(chunks);
        var ours = new List<int>();
        TakeArrived();
        while (pending.Count > 0)
        {
            foreach (int c in pending)
            {
                string key = Key(job, c);
                if (!await index.TryLeaseAsync(key, LeaseTime).ConfigureAwait(false)) continue;
                job.AtEnd(() => index.ReleaseLease(key));
                ours.Add(c);
            }
            if (ours.Count > 0)
            {
                pending.RemoveAll(ours.Contains);
                TakeArrived(); // a lease comes free when its holder stored the chunk: adopt rather than fetch
                if (pending.Count > 0) job.Defer(this, pending);
                return ours;
            }
            await Task.Delay(20, shutdown).ConfigureAwait(false);
            TakeArrived();
        }
        return ours;

        void TakeArrived()
        {
            job.Blob.Refresh();
            pending.RemoveAll(Adopt);
            ours.RemoveAll(Adopt);
        }

        bool Adopt(int c)
        {
            if (!sink.TryAdopt(job.Blob, c, job.FileName)) return false;
            job.Run.ChunkReady(c);
            return true;
        }
    }
}
