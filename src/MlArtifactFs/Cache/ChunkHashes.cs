using System.Security.Cryptography;

namespace MlArtifactFs.Cache;

/// <summary>
/// The algorithm of a manifest's chunk hashes (its <c>chunk_hash</c> field; absent means SHA-256, as
/// every manifest before it). The whole-file <c>sha256</c> stays SHA-256 either way.
/// </summary>
public enum ChunkHashAlgorithm
{
    Sha256,
    Blake3,
}

/// <summary>
/// A chunk's identity wherever it leaves its blob (the Redis index, the fleet's holders, the peer
/// protocol, dedup): the algorithm and the digest, written <c>sha256:HEX</c> or <c>blake3:HEX</c>, so a
/// SHA-256 and a BLAKE3 digest can never be taken for each other.
/// </summary>
public readonly record struct ChunkId(ChunkHashAlgorithm Algorithm, string Hex)
{
    public override string ToString() => $"{ChunkHashing.Name(Algorithm)}:{Hex}";

    /// <summary>Parses <c>ALGORITHM:HEX</c> (64 lowercase hex digits); false for anything else (input from Redis or a peer).</summary>
    public static bool TryParse(string text, out ChunkId id)
    {
        id = default;
        int colon = text.IndexOf(':');
        if (colon <= 0 || !ChunkHashing.TryParseName(text[..colon], out var algorithm)) return false;
        string hex = text[(colon + 1)..];
        if (!ChunkHashing.IsDigestHex(hex)) return false;
        id = new ChunkId(algorithm, hex);
        return true;
    }
}

/// <summary>The chunk hash functions: names, digests, and the one place a digest is computed.</summary>
public static class ChunkHashing
{
    public const int DigestSize = 32;

    public static string Name(ChunkHashAlgorithm algorithm) => algorithm == ChunkHashAlgorithm.Blake3 ? "blake3" : "sha256";

    public static bool TryParseName(string? name, out ChunkHashAlgorithm algorithm)
    {
        algorithm = name switch { "blake3" => ChunkHashAlgorithm.Blake3, _ => ChunkHashAlgorithm.Sha256 };
        return name is "sha256" or "blake3";
    }

    /// <summary>64 lowercase hex digits.</summary>
    public static bool IsDigestHex(string s) => s.Length == 2 * DigestSize && s.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');

    /// <summary>
    /// The digest of <paramref name="bytes"/>. BLAKE3 over a chunk someone waits on may use more than one
    /// core (<paramref name="parallel"/>: its tree hashes subtrees independently, then joins them).
    /// </summary>
    public static void Compute(ChunkHashAlgorithm algorithm, ReadOnlySpan<byte> bytes, Span<byte> digest, bool parallel = false)
    {
        if (algorithm == ChunkHashAlgorithm.Sha256)
        {
            SHA256.HashData(bytes, digest);
            return;
        }
        if (!parallel)
        {
            Blake3.Hasher.Hash(bytes).AsSpan().CopyTo(digest);
            return;
        }
        using var hasher = Blake3.Hasher.New();
        hasher.UpdateWithJoin(bytes);
        hasher.Finalize().AsSpan().CopyTo(digest);
    }
}

/// <summary>
/// A file's chunk hashes, compactly: one algorithm and 32 bytes per chunk in one array (a million
/// chunks take 32 MB, not a million strings). Hex is made only for messages and identities.
/// </summary>
public sealed class ChunkHashList
{
    private readonly byte[] _digests;

    public ChunkHashList(ChunkHashAlgorithm algorithm, byte[] digests)
    {
        if (digests.Length % ChunkHashing.DigestSize != 0) throw new ArgumentException("digests must be whole 32-byte hashes", nameof(digests));
        Algorithm = algorithm;
        _digests = digests;
    }

    public ChunkHashAlgorithm Algorithm { get; }
    public int Count => _digests.Length / ChunkHashing.DigestSize;

    /// <summary>From hex strings (each 64 hex digits; validated by the caller).</summary>
    public static ChunkHashList FromHex(ChunkHashAlgorithm algorithm, IReadOnlyList<string> hex)
    {
        var digests = new byte[hex.Count * ChunkHashing.DigestSize];
        for (int i = 0; i < hex.Count; i++) Convert.FromHexString(hex[i], digests.AsSpan(i * ChunkHashing.DigestSize, ChunkHashing.DigestSize), out _, out _);
        return new ChunkHashList(algorithm, digests);
    }

    public ReadOnlySpan<byte> this[int chunk] => _digests.AsSpan(chunk * ChunkHashing.DigestSize, ChunkHashing.DigestSize);

    /// <summary>Every digest, in chunk order.</summary>
    public ReadOnlySpan<byte> All => _digests;

    public string Hex(int chunk) => Convert.ToHexStringLower(this[chunk]);

    public ChunkId Id(int chunk) => new(Algorithm, Hex(chunk));
}
