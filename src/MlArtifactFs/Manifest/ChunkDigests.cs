using System.Buffers;
using System.Collections;
using System.Text.Json;
using System.Text.Json.Serialization;
using MlArtifactFs.Cache;

namespace MlArtifactFs.Manifest;

/// <summary>
/// A file's chunk hashes as the manifest lists them, held as 32-byte digests side by side (a million
/// chunks: 32 MB, not a million strings of 150 bytes each). Read straight from the manifest's UTF-8
/// (<see cref="ChunkDigestsJsonConverter"/>); reads as hex strings wherever a list of them is wanted.
/// Entries that are not 64 hex digits are kept aside in <see cref="Invalid"/>, for the loader to name.
/// </summary>
[JsonConverter(typeof(ChunkDigestsJsonConverter))]
public sealed class ChunkDigests : IReadOnlyList<string>
{
    private readonly byte[] _digests;

    internal ChunkDigests(byte[] digests, List<(int Index, string Text)>? invalid = null)
    {
        _digests = digests;
        Invalid = (IReadOnlyList<(int, string)>?)invalid ?? [];
    }

    /// <summary>From hex strings; throws on anything but 64 hex digits each.</summary>
    public static ChunkDigests FromHex(IReadOnlyList<string> hex)
    {
        var digests = new byte[hex.Count * ChunkHashing.DigestSize];
        for (int i = 0; i < hex.Count; i++)
            if (hex[i].Length != 2 * ChunkHashing.DigestSize
                || Convert.FromHexString(hex[i], digests.AsSpan(i * ChunkHashing.DigestSize, ChunkHashing.DigestSize), out _, out _) != OperationStatus.Done)
                throw new FormatException($"chunk hash {i} is not 64 hex digits");
        return new ChunkDigests(digests);
    }

    public int Count => _digests.Length / ChunkHashing.DigestSize;

    /// <summary>The digests, in chunk order (shared, never changed).</summary>
    internal byte[] Bytes => _digests;

    /// <summary>Entries that were not 64 hex digits: their index and text (their digest reads as zeros).</summary>
    public IReadOnlyList<(int Index, string Text)> Invalid { get; }

    public ReadOnlySpan<byte> Digest(int chunk) => _digests.AsSpan(chunk * ChunkHashing.DigestSize, ChunkHashing.DigestSize);

    /// <summary>The chunk's digest as 64 lowercase hex digits.</summary>
    public string this[int chunk] => Convert.ToHexStringLower(Digest(chunk));

    public IEnumerator<string> GetEnumerator()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
}

/// <summary>Reads a JSON array of hex strings into <see cref="ChunkDigests"/> without a string per entry; writes it back as hex.</summary>
public sealed class ChunkDigestsJsonConverter : JsonConverter<ChunkDigests>
{
    private const int Digest = ChunkHashing.DigestSize;

    /// <summary>Digests per segment while the array is read (its length is not known until its end).</summary>
    private const int SegmentDigests = 2048;

    public override ChunkDigests Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("chunks must be an array of hex strings");
        // Fixed-size segments, then one array of the exact size: a million digests touch 64 MB once, rather
        // than a doubling buffer's copies (and nothing is left in a pool afterwards).
        List<byte[]>? segments = null;
        byte[] segment = new byte[Digest]; // many files have one chunk; segments double up to SegmentDigests
        int count = 0, inSegment = 0;
        List<(int, string)>? invalid = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (inSegment * Digest == segment.Length)
            {
                (segments ??= []).Add(segment);
                segment = new byte[Math.Min(2 * segment.Length, SegmentDigests * Digest)];
                inSegment = 0;
            }
            var digest = segment.AsSpan(inSegment * Digest, Digest);
            if (!TryDecode(ref reader, digest))
            {
                digest.Clear();
                (invalid ??= []).Add((count, reader.TokenType == JsonTokenType.String ? reader.GetString() ?? "" : Describe(ref reader)));
            }
            count++;
            inSegment++;
        }
        if (segments is null && inSegment * Digest == segment.Length) return new ChunkDigests(segment, invalid); // exactly full: no copy
        var digests = new byte[count * Digest];
        int at = 0;
        foreach (var full in segments ?? [])
        {
            full.CopyTo(digests, at);
            at += full.Length;
        }
        segment.AsSpan(0, inSegment * Digest).CopyTo(digests.AsSpan(at));
        return new ChunkDigests(digests, invalid);
    }

    /// <summary>A string of exactly 64 hex digits (either case) into its 32 bytes.</summary>
    private static bool TryDecode(ref Utf8JsonReader reader, Span<byte> digest)
    {
        if (reader.TokenType != JsonTokenType.String) return false;
        if (!reader.ValueIsEscaped && !reader.HasValueSequence)
            return reader.ValueSpan.Length == 2 * Digest
                   && Convert.FromHexString(reader.ValueSpan, digest, out _, out int written) == OperationStatus.Done && written == Digest;
        string text = reader.GetString() ?? "";
        return text.Length == 2 * Digest && Convert.FromHexString(text, digest, out _, out int n) == OperationStatus.Done && n == Digest;
    }

    private static string Describe(ref Utf8JsonReader reader)
    {
        string kind = reader.TokenType switch
        {
            JsonTokenType.StartObject => "an object",
            JsonTokenType.StartArray => "an array",
            JsonTokenType.Number => "a number",
            JsonTokenType.True or JsonTokenType.False => "a boolean",
            JsonTokenType.Null => "null",
            _ => reader.TokenType.ToString(),
        };
        reader.Skip();
        return $"<{kind}>";
    }

    public override void Write(Utf8JsonWriter writer, ChunkDigests value, JsonSerializerOptions options) => WriteDigests(writer, value);

    /// <summary>The array of hex strings (also for writers that stream a manifest without a serializer).</summary>
    public static void WriteDigests(Utf8JsonWriter writer, ChunkDigests value)
    {
        writer.WriteStartArray();
        Span<byte> hex = stackalloc byte[2 * Digest];
        for (int i = 0; i < value.Count; i++)
        {
            Convert.TryToHexStringLower(value.Digest(i), hex, out _);
            writer.WriteStringValue(hex);
        }
        writer.WriteEndArray();
    }
}
