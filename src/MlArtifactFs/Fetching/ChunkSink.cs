using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Index;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>Told of every chunk this process holds verified on disk (fleet mode: the peer server serves it, the holders index names this node).</summary>
public interface IChunkHolders
{
    void Hold(CachedBlob blob, int chunk);
}

/// <summary>
/// Where every chunk becomes servable, whatever its source: bytes from storage, a peer or a duplicate
/// on disk are <see cref="Verify">verified</see> against the reading manifest's hash (the one
/// <c>mlfs.verify</c> span), <see cref="Stage">staged</see> (their readers go on at once, answered from
/// the buffer they were verified in), then <see cref="Store">stored</see> (written and recorded in the
/// shared cache) and published (the chunk index; the fleet's holders). Chunks already on disk are
/// <see cref="TryAdopt">adopted</see> only after hashing. No source writes the cache or releases a reader
/// itself.
/// </summary>
internal sealed class ChunkSink(IChunkIndex index, CounterSet counters, ILogger logger)
{
    /// <summary>Fleet mode: who is told of chunks held here (null: no fleet).</summary>
    public IChunkHolders? Holders { get; set; }

    /// <summary>
    /// Checks the bytes of a whole chunk against the manifest's hash for it (hashed already by
    /// <paramref name="hashed"/> as they arrived, or now). Null when they do not match: nothing of them
    /// may be staged, stored or served; the caller decides what a mismatch means for its source.
    /// </summary>
    public VerifiedChunk? Verify(ChunkRun run, int chunk, ReadOnlyMemory<byte> bytes, out string actual, ChunkHasher? hashed = null)
    {
        using var verify = run.StartChild("mlfs.verify");
        verify?.SetTag("mlfs.chunk", chunk);
        verify?.SetTag("mlfs.bytes", bytes.Length);
        // A chunk a reader waits on is hashed on every core the algorithm can use (BLAKE3's tree): it lands sooner.
        bool parallel = run.Priority == FetchPriority.Demand;
        VerifiedChunk verified;
        bool ok = hashed is not null
            ? hashed.TryFinish(chunk, bytes, out verified, out actual, parallel)
            : ChunkVerifier.TryVerify(run.Blob.Descriptor, chunk, bytes, out verified, out actual, parallel);
        verify?.SetTag("mlfs.verified", ok);
        if (!ok) verify?.SetStatus(ActivityStatusCode.Error, "hash mismatch");
        return ok ? verified : null;
    }

    /// <summary>
    /// Readers of a just-verified chunk are answered now, from <paramref name="buffer"/>, the memory it was
    /// verified in, which from here on belongs to the blob (it serves reads from it until it is stored, and
    /// while the memory budget keeps it resident after).
    /// </summary>
    public static void Stage(ChunkRun run, in VerifiedChunk chunk, ChunkBuffer buffer)
    {
        ((ChunkedBlob)run.Blob).Stage(chunk, buffer);
        run.ChunkReady(chunk.Index);
    }

    /// <summary>
    /// Writes a verified chunk into the shared cache, records it, and publishes it. A full disk throws
    /// <see cref="CacheFullException"/>; any other failed write <see cref="ChunkStoreException"/> (the chunk
    /// stops being servable; its readers read it uncached).
    /// </summary>
    public void Store(ChunkRun run, in VerifiedChunk chunk)
    {
        var blob = (ChunkedBlob)run.Blob;
        try { blob.WriteVerified(chunk); }
        catch (IOException e) when (e is not CacheFullException)
        {
            throw new ChunkStoreException($"{run.FileName}: chunk {chunk.Index} verified but could not be stored: {e.Message}", e);
        }
        index.Add(blob.Name, [(chunk.Index, blob.Descriptor.ChunkId(chunk.Index))]);
        Holders?.Hold(blob, chunk.Index); // on disk now: others may have it
    }

    /// <summary>Stage and store at once (a chunk that arrived whole: from a peer, a duplicate, parallel parts); the buffer goes with it.</summary>
    public void Accept(ChunkRun run, in VerifiedChunk chunk, ChunkBuffer buffer)
    {
        Stage(run, chunk, buffer);
        Store(run, chunk);
    }

    /// <summary>A recorded chunk becomes servable once its bytes hash to the reader's chunk hash; damage is logged, dropped and fetched again.</summary>
    public bool TryAdopt(ChunkedBlob blob, int chunk, string fileName)
    {
        long damagedBefore = blob.DamagedChunks;
        if (blob.TryAdopt(chunk))
        {
            Holders?.Hold(blob, chunk); // hashed just now
            return true;
        }
        if (blob.DamagedChunks != damagedBefore)
        {
            counters.Increment(Counters.ErrorCacheDamaged);
            logger.LogWarning("{File}: chunk {Chunk} in the cache file {Path} is damaged (its bytes do not match the SHA-256 the manifest lists); dropped from the record and fetched again",
                fileName, chunk, blob.DataPath);
        }
        return false;
    }
}
