using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace MlArtifactFs.Cache;

/// <summary>
/// Bytes of one chunk together with the proof that they match the hash the reading manifest lists
/// for it: the only thing <see cref="CachedBlob.WriteVerified"/> accepts, so no path can write
/// unverified bytes into a shared cache file, or forget the check (mountpoint-s3's ChecksummedBytes).
/// Made only by <see cref="ChunkVerifier"/>.
/// </summary>
public readonly struct VerifiedChunk
{
    internal VerifiedChunk(BlobDescriptor blob, int index, ReadOnlyMemory<byte> bytes)
    {
        Blob = blob;
        Index = index;
        Bytes = bytes;
    }

    public BlobDescriptor Blob { get; }
    public int Index { get; }
    public ReadOnlyMemory<byte> Bytes { get; }
}

/// <summary>
/// The one place bytes are checked against a manifest's hashes: fetched chunks, chunks copied from
/// another blob (dedup), chunks adopted from a record another process or an earlier run wrote, the
/// full check of the cache, and whole files without chunk hashes.
/// </summary>
public static class ChunkVerifier
{
    /// <summary>Verifies a whole chunk held in memory against <paramref name="blob"/>'s hash for it.</summary>
    public static bool TryVerify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified) =>
        TryVerify(blob, chunk, bytes, out verified, out _);

    /// <summary><see cref="TryVerify(BlobDescriptor, int, ReadOnlyMemory{byte}, out VerifiedChunk)"/>, with the hash the bytes had (for the message).</summary>
    public static bool TryVerify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified, out string actualHex)
    {
        verified = default;
        actualHex = "";
        if (!blob.HasChunkHashes || chunk < 0 || chunk >= blob.ChunkCount || bytes.Length != blob.ChunkLength(chunk)) return false;
        Span<byte> actual = stackalloc byte[32];
        SHA256.HashData(bytes.Span, actual);
        actualHex = Convert.ToHexStringLower(actual);
        if (!actual.SequenceEqual(blob.ChunkHash(chunk))) return false;
        verified = new VerifiedChunk(blob, chunk, bytes);
        return true;
    }

    /// <summary><see cref="TryVerify"/>, or a <see cref="ChunkVerificationException"/> that names the file, chunk and both hashes.</summary>
    public static VerifiedChunk Verify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, string fileName)
    {
        if (TryVerify(blob, chunk, bytes, out var verified)) return verified;
        throw Mismatch(blob, chunk, bytes.Length, Convert.ToHexStringLower(SHA256.HashData(bytes.Span)), fileName);
    }

    /// <summary>The one message for a chunk that failed its hash: file, chunk, range and both hashes (abridged).</summary>
    public static ChunkVerificationException Mismatch(BlobDescriptor blob, int chunk, int length, string actualHex, string fileName) =>
        new($"{fileName}: chunk {chunk} (bytes {blob.ChunkStart(chunk)}-{blob.ChunkStart(chunk) + length - 1}) does not match its SHA-256 " +
            $"(expected {blob.ChunkHashes![chunk][..16]}…, got {actualHex[..16]}…): not cached, not served");

    /// <summary>
    /// Verifies a chunk that is still arriving: its pieces are hashed as they land in its buffer
    /// (overlapping the hash with the transfer), and <see cref="ChunkHasher.TryFinish"/> gives the
    /// <see cref="VerifiedChunk"/> once the whole chunk is there and matches.
    /// </summary>
    public static ChunkHasher Begin(BlobDescriptor blob) => new(blob);

    /// <summary>
    /// Hashes [offset, offset+length) of a file in pieces through <paramref name="buffer"/> and compares
    /// it with <paramref name="expected"/>. Used for bytes already on disk (adoption, the full check,
    /// whole files), which are then served from disk only while nobody may write them.
    /// </summary>
    public static bool RegionMatches(SafeFileHandle file, long offset, long length, ReadOnlySpan<byte> expected, Span<byte> buffer)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (long done = 0; done < length;)
        {
            int want = (int)Math.Min(buffer.Length, length - done);
            int n = RandomAccess.Read(file, buffer[..want], offset + done);
            if (n <= 0) return false; // shorter than it should be
            hash.AppendData(buffer[..n]);
            done += n;
        }
        Span<byte> actual = stackalloc byte[32];
        hash.GetHashAndReset(actual);
        return actual.SequenceEqual(expected);
    }
}

/// <summary>An incremental check of one chunk at a time (see <see cref="ChunkVerifier.Begin"/>); reusable, not thread-safe.</summary>
public sealed class ChunkHasher : IDisposable
{
    private readonly BlobDescriptor _blob;
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private long _hashed;

    internal ChunkHasher(BlobDescriptor blob) => _blob = blob;

    /// <summary>The next piece of the chunk, in order.</summary>
    public void Append(ReadOnlySpan<byte> piece)
    {
        _hash.AppendData(piece);
        _hashed += piece.Length;
    }

    /// <summary>Forgets what was appended (a retry starts the chunk again).</summary>
    public void Reset()
    {
        Span<byte> discard = stackalloc byte[32];
        _hash.GetHashAndReset(discard);
        _hashed = 0;
    }

    /// <summary>
    /// True, with the proof, when <paramref name="bytes"/> (the whole chunk, the same bytes that were
    /// appended) hash to the blob's chunk hash. Always resets for the next chunk.
    /// </summary>
    public bool TryFinish(int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified, out string actualHex)
    {
        verified = default;
        Span<byte> actual = stackalloc byte[32];
        bool complete = _hashed == bytes.Length && bytes.Length == _blob.ChunkLength(chunk);
        _hash.GetHashAndReset(actual);
        _hashed = 0;
        actualHex = Convert.ToHexStringLower(actual);
        if (!complete || !actual.SequenceEqual(_blob.ChunkHash(chunk))) return false;
        verified = new VerifiedChunk(_blob, chunk, bytes);
        return true;
    }

    public void Dispose() => _hash.Dispose();
}
