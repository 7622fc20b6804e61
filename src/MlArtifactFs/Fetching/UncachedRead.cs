using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>
/// The degraded path when the cache cannot be written (a full disk, a failed write): fetches the chunks
/// covering a read into memory (from the buffer budget), verifies them, and copies out the bytes asked
/// for. Nothing is cached; nothing unverified is served (files without chunk hashes: as the seed does, counted).
/// </summary>
internal sealed class UncachedRead(RangeReader range, ChunkMemory memory, CounterSet counters)
{
    public async Task<int> ReadAsync(CachedBlob blob, ObjectLocation location, string fileName, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        var d = blob.Descriptor;
        int length = (int)Math.Min(destination.Length, d.Size - offset);
        if (length <= 0) return 0;
        var (first, last) = d.ChunksOf(offset, length);
        long start = d.HasChunkHashes ? d.ChunkStart(first) : offset;
        long end = d.HasChunkHashes ? d.ChunkEnd(last) : offset + length;
        using var rental = await memory.RentAsync((int)(end - start), cancel).ConfigureAwait(false);
        var bytes = rental.Memory;
        await range.ReadWithRetriesAsync(location, start, bytes, () =>
        {
            if (!d.HasChunkHashes) return;
            for (int c = first; c <= last; c++)
                ChunkVerifier.Verify(d, c, bytes.Slice((int)(d.ChunkStart(c) - start), d.ChunkLength(c)), fileName);
        }, cancel).ConfigureAwait(false);
        if (!d.HasChunkHashes) counters.Add(Counters.UnverifiedBytesServed, length);
        bytes.Slice((int)(offset - start), length).CopyTo(destination);
        return length;
    }
}
