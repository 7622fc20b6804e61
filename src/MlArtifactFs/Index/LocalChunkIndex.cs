using System.Collections.Concurrent;

namespace MlArtifactFs.Index;

/// <summary>
/// The in-process index used without --redis: dedup within this process, and no cross-process
/// single flight (leases are always granted; the fetcher's in-process single flight still applies).
/// </summary>
public sealed class LocalChunkIndex : IChunkIndex
{
    private readonly ConcurrentDictionary<string, ChunkLocation> _chunks = new(StringComparer.Ordinal);

    public ValueTask<IReadOnlyList<ChunkLocation>> FindAsync(string chunkSha256) =>
        ValueTask.FromResult<IReadOnlyList<ChunkLocation>>(_chunks.TryGetValue(chunkSha256, out var location) ? [location] : []);

    /// <summary>Everything known, for republishing to a shared index.</summary>
    public IEnumerable<KeyValuePair<string, ChunkLocation>> All => _chunks;

    public void Add(string blobName, IReadOnlyList<(int Chunk, string Sha256)> chunks)
    {
        foreach (var (chunk, sha) in chunks) _chunks.TryAdd(sha, new ChunkLocation(blobName, chunk));
    }

    public ValueTask<bool> TryLeaseAsync(string key, TimeSpan ttl) => ValueTask.FromResult(true);

    public void ReleaseLease(string key) { }

    public string Describe() => "local (this process)";

    public int Count => _chunks.Count;

    public void Dispose() { }
}
