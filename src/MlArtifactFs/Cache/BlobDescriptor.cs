using System.Buffers.Binary;
using System.Security.Cryptography;

namespace MlArtifactFs.Cache;

/// <summary>
/// What a file of a manifest asks of the cache: its size, how it is cut into chunks, and the hashes
/// its bytes must match. <see cref="Chunks"/> is null for files without <c>chunks</c> (the seed format):
/// such blobs can only be verified whole, against <see cref="Sha256"/>.
/// <para>
/// <see cref="Name"/> is the blob's identity in the cache, derived only from what a reader can verify:
/// for chunked files SHA-256 over (chunk hash algorithm, chunk size, size, chunk list), because the
/// whole-file sha256 of a chunked file is a claim nobody checks while chunks are served; for whole files
/// the sha256 and the size, which is exactly what their verification checks. So a manifest that lies
/// about a file's sha256 gets a blob of its own, identical files still share one, and different chunk
/// lists (or the same digests under another algorithm) never do.
/// </para>
/// </summary>
public sealed record BlobDescriptor(string Sha256, long Size, long ChunkSize, ChunkHashList? Chunks)
{
    private string? _name;

    /// <summary>From hex chunk hashes (tests, small tools); the manifest loader builds the compact list itself.</summary>
    public BlobDescriptor(string sha256, long size, long chunkSize, IReadOnlyList<string>? chunkHashes, ChunkHashAlgorithm algorithm = ChunkHashAlgorithm.Sha256)
        : this(sha256, size, chunkSize, chunkHashes switch
        {
            null => null,
            Manifest.ChunkDigests digests => new ChunkHashList(algorithm, digests.Bytes), // the manifest's own bytes: no copy
            _ => ChunkHashList.FromHex(algorithm, chunkHashes),
        }) { }

    public int ChunkCount => Size == 0 ? 0 : (int)((Size + ChunkSize - 1) / ChunkSize);
    public bool HasChunkHashes => Chunks is not null;
    public ChunkHashAlgorithm Algorithm => Chunks?.Algorithm ?? ChunkHashAlgorithm.Sha256;
    public long ChunkStart(int chunk) => chunk * ChunkSize;
    public long ChunkEnd(int chunk) => Math.Min(Size, (chunk + 1) * ChunkSize);
    public int ChunkLength(int chunk) => (int)(ChunkEnd(chunk) - ChunkStart(chunk));
    public int ChunkOf(long offset) => (int)(offset / ChunkSize);

    /// <summary>The chunks a byte range [offset, offset+length) touches (length &gt; 0): the one conversion from bytes to chunks.</summary>
    public (int First, int Last) ChunksOf(long offset, long length) => (ChunkOf(offset), ChunkOf(offset + length - 1));

    /// <summary>The blob's file name stem in the cache: <c>c-HASH</c> (chunked) or <c>w-SHA256-SIZE</c> (whole).</summary>
    public string Name => _name ??= HasChunkHashes ? ChunkedPrefix + Convert.ToHexStringLower(ChunkListId()) : $"{WholePrefix}{Sha256}-{Size}";

    public const string ChunkedPrefix = "c-", WholePrefix = "w-";

    /// <summary>The chunk's expected digest.</summary>
    public ReadOnlySpan<byte> ChunkHash(int chunk) => Chunks![chunk];

    /// <summary>The chunk's identity outside its blob (index, fleet, peers): algorithm and digest.</summary>
    public ChunkId ChunkId(int chunk) => Chunks!.Id(chunk);

    /// <summary>The whole file's expected SHA-256 as bytes.</summary>
    public byte[] FileHash() => Convert.FromHexString(Sha256);

    /// <summary>
    /// SHA-256 over a domain string, chunk size, size and every chunk digest: binds the blob to its chunk
    /// list. SHA-256 lists keep the domain they always had ("mlfs-chunks-v1"), so existing caches stay valid;
    /// BLAKE3 lists have their own, so the same digests under two algorithms name two blobs.
    /// </summary>
    public byte[] ChunkListId()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Algorithm == ChunkHashAlgorithm.Blake3 ? "mlfs-chunks-blake3-v1\0"u8 : "mlfs-chunks-v1\0"u8);
        Span<byte> numbers = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(numbers, ChunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(numbers[8..], Size);
        hash.AppendData(numbers);
        hash.AppendData(Chunks!.All);
        return hash.GetHashAndReset();
    }

    /// <summary>True for names this version of mlfs makes (anything else in the cache directory is ignored, then evicted).</summary>
    public static bool IsBlobName(string name) =>
        (name.Length == 66 && name.StartsWith(ChunkedPrefix, StringComparison.Ordinal) && IsLowerHex(name.AsSpan(2)))
        || (name.Length > 68 && name.StartsWith(WholePrefix, StringComparison.Ordinal) && IsLowerHex(name.AsSpan(2, 64)) && name[66] == '-'
            && long.TryParse(name.AsSpan(67), System.Globalization.NumberStyles.None, null, out _));

    private static bool IsLowerHex(ReadOnlySpan<char> s)
    {
        foreach (char ch in s)
            if (ch is not ((>= '0' and <= '9') or (>= 'a' and <= 'f'))) return false;
        return true;
    }
}
