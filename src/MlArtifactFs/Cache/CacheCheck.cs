using System.Buffers;
using System.Globalization;

namespace MlArtifactFs.Cache;

/// <summary>What a full check of a cache directory found.</summary>
public sealed record CacheCheckResult(int Blobs, long ChunksChecked, long BytesChecked, IReadOnlyList<string> Damaged);

/// <summary>
/// A full check of a cache directory without any manifest (`mlfs cache verify`, and the tests): every
/// chunk a record names as verified is hashed and compared with the SHA-256 its entry carries, and every
/// shared whole file with the sha256 in its name. It reads only; a mount finds and drops damage itself.
/// </summary>
public static class CacheCheck
{
    public static CacheCheckResult Run(string root)
    {
        string blobs = Path.Combine(Path.GetFullPath(root), "blobs");
        var damaged = new List<string>();
        int count = 0;
        long chunks = 0, bytes = 0;
        byte[] scratch = ArrayPool<byte>.Shared.Rent(256 << 10);
        try
        {
            if (!Directory.Exists(blobs)) return new CacheCheckResult(0, 0, 0, []);
            foreach (var dataPath in Directory.EnumerateFiles(blobs, "*.data", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                string name = Path.GetFileNameWithoutExtension(dataPath);
                if (!BlobDescriptor.IsBlobName(name)) continue; // an earlier format: never read, only evicted
                using var data = CacheFiles.OpenExisting(dataPath);
                if (data is null) continue;
                count++;
                if (name.StartsWith(BlobDescriptor.WholePrefix, StringComparison.Ordinal))
                {
                    long size = long.Parse(name.AsSpan(67), CultureInfo.InvariantCulture);
                    chunks++;
                    bytes += size;
                    if (RandomAccess.GetLength(data) != size
                        || !ChunkVerifier.RegionMatches(data, 0, size, ChunkHashAlgorithm.Sha256, Convert.FromHexString(name.AsSpan(2, 64)), scratch.AsSpan(0, 256 << 10)))
                        damaged.Add($"{name}: the file does not match the sha256 in its name");
                    continue;
                }
                using var record = CacheFiles.OpenExisting(Path.ChangeExtension(dataPath, ".rec"));
                if (record is null) continue;
                var header = new byte[ChunkRecord.HeaderSize];
                if (RandomAccess.Read(record, header, 0) != ChunkRecord.HeaderSize || !ChunkRecord.TryReadHeader(header, out long chunkSize, out long fileSize, out var algorithm))
                {
                    damaged.Add($"{name}: unreadable record header");
                    continue;
                }
                var latest = new Dictionary<uint, ChunkRecord.Entry>(); // the last entry of a chunk wins
                ChunkRecord.ReadEntries(record, ChunkRecord.HeaderSize, e => latest[e.Chunk] = e);
                foreach (var (chunk, entry) in latest.OrderBy(kv => kv.Key))
                {
                    if (entry.Kind != ChunkRecord.Verified) continue;
                    long start = chunk * chunkSize, length = Math.Min(chunkSize, fileSize - start);
                    if (length <= 0) { damaged.Add($"{name}: chunk {chunk} is past the end of the file"); continue; }
                    chunks++;
                    bytes += length;
                    if (!ChunkVerifier.RegionMatches(data, start, length, algorithm, entry.Digest, scratch.AsSpan(0, 256 << 10)))
                        damaged.Add($"{name}: chunk {chunk} does not match its recorded {ChunkHashing.Name(algorithm)} digest");
                }
            }
        }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
        return new CacheCheckResult(count, chunks, bytes, damaged);
    }
}
