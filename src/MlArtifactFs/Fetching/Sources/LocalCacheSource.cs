using MlArtifactFs.Cache;
using MlArtifactFs.Index;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching.Sources;

/// <summary>
/// The first tier: what the cache directory already holds. A chunk the blob's record names (written by
/// an earlier run or another process) is adopted once its bytes hash to the reader's chunk hash; an
/// identical chunk of another blob, named by the chunk index, is copied into memory, verified against
/// the reader's hash, then stored like any fetched chunk. Names and index entries are hints, never proof.
/// </summary>
internal sealed class LocalCacheSource(BlobCache cache, IChunkIndex index, ChunkSink sink, CounterSet counters) : IChunkSource
{
    public async Task FetchAsync(ChunkJob job)
    {
        job.Blob.Refresh();
        var got = new List<int>();
        foreach (int c in job.Missing)
        {
            if (sink.TryAdopt(job.Blob, c, job.FileName)) job.Run.ChunkReady(c);
            else if (!await TryCopyDuplicateAsync(job, c).ConfigureAwait(false)) continue;
            got.Add(c);
        }
        job.Missing.RemoveAll(got.Contains);
    }

    /// <summary>Copies a chunk with the same hash from another blob named by the chunk index; false when no named copy is usable.</summary>
    private async Task<bool> TryCopyDuplicateAsync(ChunkJob job, int chunk)
    {
        var d = job.Descriptor;
        var locations = await index.FindAsync(d.ChunkId(chunk)).ConfigureAwait(false);
        foreach (var location in locations)
        {
            if (location.BlobName == job.Blob.Name && location.Chunk == chunk) continue;
            var buffer = await job.RentAsync(chunk).ConfigureAwait(false);
            var bytes = buffer.Memory;
            if (!cache.TryReadIndexedChunk(location.BlobName, location.Chunk, bytes)) // gone, or a name not ours (counted there)
            {
                buffer.Dispose();
                continue;
            }
            if (sink.Verify(job.Run, chunk, bytes, out _) is not { } verified)
            {
                Interlocked.Increment(ref cache.IgnoredIndexEntries); // stale or damaged copy: fetch instead
                buffer.Dispose();
                continue;
            }
            try { sink.Accept(job.Run, verified, buffer); }
            catch (ChunkStoreException) { return false; } // could not be written here: fetch it the ordinary way
            counters.Increment(Counters.ChunksDeduplicated);
            counters.Add(Counters.BytesDeduplicated, bytes.Length);
            return true;
        }
        return false;
    }
}
