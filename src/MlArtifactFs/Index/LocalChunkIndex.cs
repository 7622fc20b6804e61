using System.Collections.Concurrent;
using MlArtifactFs.Cache;

namespace MlArtifactFs.Index;

/// <summary>
/// The in-process index used without --redis: dedup within this process, and no cross-process
/// single flight (leases are always granted; the fetcher's in-process single flight still applies).
/// </summary>
public sealed class LocalChunkIndex : IChunkIndex
{
    private readonly ConcurrentDictionary<ChunkId, ChunkLocation> _chunks = new();

    public ValueTask<IReadOnlyList<ChunkLocation>> FindAsync(ChunkId chunk) =>
        ValueTask.FromResult<IReadOnlyList<ChunkLocation>>(_chunks.TryGetValue(chunk, out var location) ? [location] : []);

    /// <summary>Everything known, for republishing to a shared index.</summary>
    public IEnumerable<KeyValuePair<ChunkId, ChunkLocation>> All => _chunks;

    public void Add(string blobName, IReadOnlyList<(int Chunk, ChunkId Id)> chunks)
    {
        foreach (var (chunk, id) in chunks) _chunks.TryAdd(id, new ChunkLocation(blobName, chunk));
    }

    public void Remove(string blobName, int chunk, ChunkId id) =>
        _chunks.TryRemove(new KeyValuePair<ChunkId, ChunkLocation>(id, new ChunkLocation(blobName, chunk)));

    public ValueTask<bool> TryLeaseAsync(string key, TimeSpan ttl) => ValueTask.FromResult(true);

    public void ReleaseLease(string key) { }

    public string Describe() => "local (this process)";

    public int Count => _chunks.Count;

    public void Dispose() { }
}
