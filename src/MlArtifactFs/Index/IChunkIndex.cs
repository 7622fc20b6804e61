using MlArtifactFs.Cache;

namespace MlArtifactFs.Index;

/// <summary>Where a verified copy of a chunk lives in the cache directory.</summary>
public sealed record ChunkLocation(string BlobName, int Chunk);

/// <summary>
/// The chunk index of the shared cache: which verified chunks exist where (by chunk id, for
/// dedup across files and versions), and a cross-process single flight for fetches. It is never the
/// source of truth: every location it returns is re-verified by hashing before use, and when it is
/// unavailable reads go on, correct, with only the sharing lost.
/// </summary>
public interface IChunkIndex : IDisposable
{
    /// <summary>Known locations of a chunk with this id (algorithm and digest; may be stale: verify before use).</summary>
    ValueTask<IReadOnlyList<ChunkLocation>> FindAsync(ChunkId chunk);

    /// <summary>Records verified chunks of a blob.</summary>
    void Add(string blobName, IReadOnlyList<(int Chunk, ChunkId Id)> chunks);

    /// <summary>A chunk evicted from a blob: the index stops naming that location for it.</summary>
    void Remove(string blobName, int chunk, ChunkId id);

    /// <summary>
    /// Tries to take the fetch lease of a chunk: true when this process should fetch it; false when
    /// another process holds it (wait for it to appear in the shared cache instead).
    /// </summary>
    ValueTask<bool> TryLeaseAsync(string key, TimeSpan ttl);

    void ReleaseLease(string key);

    /// <summary>Human-readable state for status and logs ("local", "redis 127.0.0.1:6379 (connected)").</summary>
    string Describe();

    /// <summary>Entries found unusable and ignored (unparsable locations, leases without a sane TTL).</summary>
    long IgnoredEntries => 0;
}
