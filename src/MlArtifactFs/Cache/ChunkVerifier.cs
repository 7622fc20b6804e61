using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;

namespace MlArtifactFs.Cache;

/// <summary>
/// Bytes of one chunk together with the proof that they match the hash the reading manifest lists
/// for it: the only thing <see cref="ChunkedBlob.WriteVerified"/> accepts, so no path can write
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
/// full check of the cache, and whole files without chunk hashes. Chunks are checked with the
/// manifest's chunk hash algorithm (SHA-256 or BLAKE3), whole files with SHA-256.
/// </summary>
public static class ChunkVerifier
{
    /// <summary>Verifies a whole chunk held in memory against <paramref name="blob"/>'s hash for it.</summary>
    public static bool TryVerify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified) =>
        TryVerify(blob, chunk, bytes, out verified, out _);

    /// <summary>
    /// <see cref="TryVerify(BlobDescriptor, int, ReadOnlyMemory{byte}, out VerifiedChunk)"/>, with the hash the
    /// bytes had (for the message); <paramref name="parallel"/>: a reader waits on it, hash on more than one core where the algorithm allows.
    /// </summary>
    public static bool TryVerify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified, out string actualHex, bool parallel = false)
    {
        verified = default;
        actualHex = "";
        if (!blob.HasChunkHashes || chunk < 0 || chunk >= blob.ChunkCount || bytes.Length != blob.ChunkLength(chunk)) return false;
        Span<byte> actual = stackalloc byte[ChunkHashing.DigestSize];
        ChunkHashing.Compute(blob.Algorithm, bytes.Span, actual, parallel);
        actualHex = Convert.ToHexStringLower(actual);
        if (!actual.SequenceEqual(blob.ChunkHash(chunk))) return false;
        verified = new VerifiedChunk(blob, chunk, bytes);
        return true;
    }

    /// <summary><see cref="TryVerify(BlobDescriptor, int, ReadOnlyMemory{byte}, out VerifiedChunk)"/>, or a <see cref="ChunkVerificationException"/> that names the file, chunk and both hashes.</summary>
    public static VerifiedChunk Verify(BlobDescriptor blob, int chunk, ReadOnlyMemory<byte> bytes, string fileName)
    {
        if (TryVerify(blob, chunk, bytes, out var verified, out string actual)) return verified;
        throw Mismatch(blob, chunk, bytes.Length, actual, fileName);
    }

    /// <summary>The one message for a chunk that failed its hash: file, chunk, range and both hashes (abridged).</summary>
    public static ChunkVerificationException Mismatch(BlobDescriptor blob, int chunk, int length, string actualHex, string fileName) =>
        new($"{fileName}: chunk {chunk} (bytes {blob.ChunkStart(chunk)}-{blob.ChunkStart(chunk) + length - 1}) does not match its " +
            $"{(blob.Algorithm == ChunkHashAlgorithm.Blake3 ? "BLAKE3" : "SHA-256")} (expected {blob.Chunks!.Hex(chunk)[..16]}…, got {(actualHex.Length >= 16 ? actualHex[..16] : "?")}…): not cached, not served");

    /// <summary>
    /// Verifies a chunk that is still arriving (see <see cref="ChunkHasher"/>): <see cref="ChunkHasher.TryFinish"/>
    /// gives the <see cref="VerifiedChunk"/> once the whole chunk is there and matches.
    /// </summary>
    public static ChunkHasher Begin(BlobDescriptor blob) => new(blob);

    /// <summary>
    /// Hashes [offset, offset+length) of a file in pieces through <paramref name="buffer"/> and compares
    /// it with <paramref name="expected"/>. Used for bytes already on disk (adoption, the full check,
    /// whole files), which are then served from disk only while nobody may write them.
    /// </summary>
    public static bool RegionMatches(SafeFileHandle file, long offset, long length, ChunkHashAlgorithm algorithm, ReadOnlySpan<byte> expected, Span<byte> buffer)
    {
        using var sha256 = algorithm == ChunkHashAlgorithm.Sha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        using var blake3 = algorithm == ChunkHashAlgorithm.Blake3 ? Blake3.Hasher.New() : null;
        for (long done = 0; done < length;)
        {
            int want = (int)Math.Min(buffer.Length, length - done);
            int n = RandomAccess.Read(file, buffer[..want], offset + done);
            if (n <= 0) return false; // shorter than it should be
            if (sha256 is not null) sha256.AppendData(buffer[..n]);
            else blake3!.Update(buffer[..n]);
            done += n;
        }
        Span<byte> actual = stackalloc byte[ChunkHashing.DigestSize];
        if (sha256 is not null) sha256.GetHashAndReset(actual);
        else blake3!.Finalize().AsSpan().CopyTo(actual);
        return actual.SequenceEqual(expected);
    }
}

/// <summary>
/// The check of one chunk while it arrives in its buffer, reusable, not thread-safe. SHA-256 hashes each
/// piece as it lands (overlapping the hash with the transfer); BLAKE3 hashes the whole chunk once it is
/// there, which costs half as much as hashing socket-sized pieces (measured: 0.18 against 0.5 CPU s/GiB
/// for 64 KiB updates) and, for a chunk a reader waits on, may use more than one core.
/// </summary>
public sealed class ChunkHasher : IDisposable
{
    private readonly BlobDescriptor _blob;
    private readonly IncrementalHash? _sha256;
    private long _appended;

    internal ChunkHasher(BlobDescriptor blob)
    {
        _blob = blob;
        if (blob.Algorithm == ChunkHashAlgorithm.Sha256) _sha256 = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    }

    /// <summary>The next piece of the chunk, in order (in the chunk's buffer).</summary>
    public void Append(ReadOnlySpan<byte> piece)
    {
        _sha256?.AppendData(piece);
        _appended += piece.Length;
    }

    /// <summary>Forgets what was appended (a retry starts the chunk again).</summary>
    public void Reset()
    {
        if (_sha256 is not null)
        {
            Span<byte> discard = stackalloc byte[32];
            _sha256.GetHashAndReset(discard);
        }
        _appended = 0;
    }

    /// <summary>
    /// True, with the proof, when <paramref name="bytes"/> (the whole chunk, the same bytes that were
    /// appended) hash to the blob's chunk hash. Always resets for the next chunk.
    /// </summary>
    public bool TryFinish(int chunk, ReadOnlyMemory<byte> bytes, out VerifiedChunk verified, out string actualHex, bool parallel = false)
    {
        verified = default;
        actualHex = "";
        bool complete = _appended == bytes.Length && bytes.Length == _blob.ChunkLength(chunk);
        if (_sha256 is null)
        {
            _appended = 0;
            return complete && ChunkVerifier.TryVerify(_blob, chunk, bytes, out verified, out actualHex, parallel);
        }
        Span<byte> actual = stackalloc byte[ChunkHashing.DigestSize];
        _sha256.GetHashAndReset(actual);
        _appended = 0;
        actualHex = Convert.ToHexStringLower(actual);
        if (!complete || !actual.SequenceEqual(_blob.ChunkHash(chunk))) return false;
        verified = new VerifiedChunk(_blob, chunk, bytes);
        return true;
    }

    public void Dispose() => _sha256?.Dispose();
}
