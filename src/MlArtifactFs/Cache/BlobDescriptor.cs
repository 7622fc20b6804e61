using System.Buffers.Binary;
using System.Security.Cryptography;

namespace MlArtifactFs.Cache;

/// <summary>
/// What a file of a manifest asks of the cache: its size, how it is cut into chunks, and the hashes
/// its bytes must match. Chunk hashes are null for files without <c>chunks</c> (the seed format):
/// such blobs can only be verified whole, against <see cref="Sha256"/>.
/// <para>
/// <see cref="Name"/> is the blob's identity in the cache, derived only from what a reader can verify:
/// for chunked files SHA-256 over (chunk size, size, chunk list), because the whole-file sha256 of a
/// chunked file is a claim nobody checks while chunks are served; for whole files the sha256 and the
/// size, which is exactly what their verification checks. So a manifest that lies about a file's
/// sha256 gets a blob of its own, identical files still share one, and different chunk lists never do.
/// </para>
/// </summary>
public sealed record BlobDescriptor(string Sha256, long Size, long ChunkSize, IReadOnlyList<string>? ChunkHashes)
{
    private string? _name;
    private byte[][]? _chunkHashBytes;

    public int ChunkCount => Size == 0 ? 0 : (int)((Size + ChunkSize - 1) / ChunkSize);
    public bool HasChunkHashes => ChunkHashes is not null;
    public long ChunkStart(int chunk) => chunk * ChunkSize;
    public long ChunkEnd(int chunk) => Math.Min(Size, (chunk + 1) * ChunkSize);
    public int ChunkLength(int chunk) => (int)(ChunkEnd(chunk) - ChunkStart(chunk));
    public int ChunkOf(long offset) => (int)(offset / ChunkSize);

    /// <summary>The chunks a byte range [offset, offset+length) touches (length &gt; 0): the one conversion from bytes to chunks.</summary>
    public (int First, int Last) ChunksOf(long offset, long length) => (ChunkOf(offset), ChunkOf(offset + length - 1));

    /// <summary>The blob's file name stem in the cache: <c>c-HASH</c> (chunked) or <c>w-SHA256-SIZE</c> (whole).</summary>
    public string Name => _name ??= HasChunkHashes ? ChunkedPrefix + Convert.ToHexStringLower(ChunkListId()) : $"{WholePrefix}{Sha256}-{Size}";

    public const string ChunkedPrefix = "c-", WholePrefix = "w-";

    /// <summary>The chunk's expected SHA-256 as bytes (parsed once).</summary>
    public ReadOnlySpan<byte> ChunkHash(int chunk)
    {
        _chunkHashBytes ??= ChunkHashes!.Select(Convert.FromHexString).ToArray();
        return _chunkHashBytes[chunk];
    }

    /// <summary>The whole file's expected SHA-256 as bytes.</summary>
    public byte[] FileHash() => Convert.FromHexString(Sha256);

    /// <summary>SHA-256 over "mlfs-chunks-v1", chunk size, size and every chunk hash: binds the blob to its chunk list.</summary>
    public byte[] ChunkListId()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData("mlfs-chunks-v1\0"u8);
        Span<byte> numbers = stackalloc byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(numbers, ChunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(numbers[8..], Size);
        hash.AppendData(numbers);
        for (int c = 0; c < ChunkCount; c++) hash.AppendData(ChunkHash(c));
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
