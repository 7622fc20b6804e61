using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fetching.Sources;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fleet;

/// <summary>
/// The fleet tier (fleet mode), before storage: each missing chunk from a peer that holds it (up to three
/// holders, least loaded first), verified against the reading manifest's hash like any other bytes. A
/// chunk no peer holds is fetched from storage by one node of the fleet: this run takes the fleet lease
/// and passes the chunk on down the chain, or, when another node holds the lease, sets it aside and
/// waits for that node (bounded by <see cref="FleetOptions.PeerWait"/>) once it fetched its own chunks,
/// then copies from it; what never comes is hedged to storage.
/// </summary>
internal sealed class FleetSource(FleetIndex index, PeerClient client, FleetOptions options, ChunkSink sink, CounterSet counters,
    ILogger logger, CancellationToken shutdown) : IChunkSource
{
    private enum Lease { Ours, Theirs, CopiedFromPeer }

    public async Task FetchAsync(ChunkJob job)
    {
        var got = new List<int>();
        var theirs = new List<int>();
        foreach (int c in job.Missing)
        {
            if (await TryPeersAsync(job, c).ConfigureAwait(false)) got.Add(c);
            else
                switch (await TakeLeaseAsync(job, c).ConfigureAwait(false))
                {
                    case Lease.Theirs: theirs.Add(c); break;
                    case Lease.CopiedFromPeer: got.Add(c); break;
                    // Ours: it stays missing, for storage
                }
        }
        job.Missing.RemoveAll(got.Contains);
        if (theirs.Count > 0) job.Defer(this, theirs);
    }

    /// <summary>Waits for the nodes fetching these chunks from storage, then copies from them; returns the chunks to hedge to storage.</summary>
    public async Task<List<int>> AwaitDeferredAsync(ChunkJob job, List<int> chunks)
    {
        var hedged = new List<int>();
        foreach (int c in chunks)
        {
            counters.Increment(Counters.FleetWaits);
            var deadline = DateTime.UtcNow + options.PeerWait;
            bool got = false;
            while (!got && DateTime.UtcNow < deadline && !shutdown.IsCancellationRequested)
            {
                await Task.Delay(20, shutdown).ConfigureAwait(false);
                if (await TryPeersAsync(job, c).ConfigureAwait(false)) got = true;
                else
                {
                    var lease = await TakeLeaseAsync(job, c).ConfigureAwait(false);
                    if (lease == Lease.CopiedFromPeer) got = true;
                    else if (lease == Lease.Ours) break; // its fetcher finished without it, gave up or died: ours now
                }
            }
            if (got) continue;
            if (DateTime.UtcNow >= deadline) counters.Increment(Counters.FleetHedges);
            hedged.Add(c);
        }
        return hedged;
    }

    /// <summary>
    /// Takes the fleet lease of a chunk (released when the run ends). With it, looks for holders once more
    /// before going to storage: a lease is free also just after its holder stored the chunk, announced it and let go.
    /// </summary>
    private async Task<Lease> TakeLeaseAsync(ChunkJob job, int chunk)
    {
        var id = job.Descriptor.ChunkId(chunk);
        if (!await index.TryLeaseAsync(id, options.LeaseTime).ConfigureAwait(false)) return Lease.Theirs;
        if (await TryPeersAsync(job, chunk).ConfigureAwait(false))
        {
            index.ReleaseLease(id);
            return Lease.CopiedFromPeer;
        }
        job.AtEnd(() => index.ReleaseLease(id));
        return Lease.Ours;
    }

    /// <summary>One chunk from a peer that holds it: up to three holders, each verified against the reading manifest's hash.</summary>
    private async Task<bool> TryPeersAsync(ChunkJob job, int chunk)
    {
        var d = job.Descriptor;
        var id = d.ChunkId(chunk);
        var holders = (await index.HoldersAsync(id).ConfigureAwait(false)).Where(p => !client.IsSkipped(p)).ToArray();
        if (holders.Length == 0) return false;
        // A random one of the least loaded (by this node's GETs open to each): spreads the load, and each new holder is a source.
        Random.Shared.Shuffle(holders);
        var buffer = await job.RentAsync(chunk).ConfigureAwait(false);
        var bytes = buffer.Memory;
        bool given = false; // once the sink has the chunk, the buffer is the blob's
        try
        {
            foreach (var peer in holders.OrderBy(client.InFlight).Take(3))
            {
                var (failure, notHeld) = await client.TryGetAsync(peer, id, bytes, job.FileName, shutdown).ConfigureAwait(false);
                if (notHeld) continue; // evicted there since it was announced: ask the next holder
                if (failure is null)
                {
                    if (sink.Verify(job.Run, chunk, bytes, out _) is { } verified)
                    {
                        client.Credit(peer, bytes.Length);
                        counters.Increment(Counters.ChunksFromPeers);
                        counters.Add(Counters.BytesFromPeers, bytes.Length);
                        job.Run.Progress.Bytes += bytes.Length;
                        given = true;
                        sink.Accept(job.Run, verified, buffer);
                        counters.Increment(Counters.ChunksFetched);
                        return true;
                    }
                    failure = $"bytes that do not match the chunk's {ChunkHashing.Name(id.Algorithm)} digest";
                }
                client.Penalize(peer);
                counters.Increment(Counters.PeerFailures);
                counters.Increment(Counters.ErrorPeer);
                logger.LogWarning("fleet: {File} chunk {Chunk} from peer {Peer}: {Failure}; skipping that peer for {Penalty} s",
                    job.FileName, chunk, peer, failure, options.Penalty.TotalSeconds);
            }
            return false;
        }
        finally
        {
            if (!given) buffer.Dispose();
        }
    }
}
