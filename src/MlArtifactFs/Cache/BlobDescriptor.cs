namespace MlArtifactFs.Cache;

/// <summary>
/// What identifies a blob in the cache: its content hash (files with the same SHA-256 share one
/// blob, across manifests and versions), its size, and how it is cut into chunks. Chunk hashes
/// are null for seed manifests: such blobs can only be verified whole.
/// </summary>
public sealed record BlobDescriptor(string Sha256, long Size, long ChunkSize, IReadOnlyList<string>? ChunkHashes)
{
    public int ChunkCount => Size == 0 ? 0 : (int)((Size + ChunkSize - 1) / ChunkSize);
    public bool HasChunkHashes => ChunkHashes is not null;
    public long ChunkStart(int chunk) => chunk * ChunkSize;
    public long ChunkEnd(int chunk) => Math.Min(Size, (chunk + 1) * ChunkSize);
    public int ChunkOf(long offset) => (int)(offset / ChunkSize);
}
