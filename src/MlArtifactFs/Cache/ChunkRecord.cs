using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace MlArtifactFs.Cache;

/// <summary>
/// The persisted record of which chunks of a blob are present and verified: an append-only log
/// next to the sparse data file. A 32-byte header (magic, chunk size, file size) then 16-byte
/// entries: chunk index, a check word, and the XxHash3 digest of the chunk's bytes as written.
/// An entry is appended only after its chunk's bytes were written and its SHA-256 matched, so after
/// a crash (even kill -9 mid-write) the record never claims a chunk that is not there; a torn or
/// garbage entry fails its check and is ignored. The digest lets a later process detect a cache file
/// damaged on disk (bit rot, a stray write) cheaply (~10 GB/s) before serving from it.
/// <see cref="CompleteMarker"/> says the whole file was verified (seed manifests have no chunk hashes).
/// </summary>
internal static class ChunkRecord
{
    public const int HeaderSize = 32;
    public const int EntrySize = 16;
    public const uint CompleteMarker = uint.MaxValue;
    private static ReadOnlySpan<byte> Magic => "MLFSREC2"u8;

    public static byte[] Header(long chunkSize, long fileSize)
    {
        var header = new byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(8), chunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(16), fileSize);
        return header;
    }

    public static bool HeaderMatches(ReadOnlySpan<byte> header, long chunkSize, long fileSize) =>
        header.Length >= HeaderSize && header[..8].SequenceEqual(Magic)
        && BinaryPrimitives.ReadInt64LittleEndian(header[8..]) == chunkSize
        && BinaryPrimitives.ReadInt64LittleEndian(header[16..]) == fileSize;

    public static void WriteEntry(Span<byte> destination, uint chunk, ulong digest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, chunk);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Check(chunk, digest));
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], digest);
    }

    public static bool TryReadEntry(ReadOnlySpan<byte> source, out uint chunk, out ulong digest)
    {
        chunk = BinaryPrimitives.ReadUInt32LittleEndian(source);
        digest = BinaryPrimitives.ReadUInt64LittleEndian(source[8..]);
        return BinaryPrimitives.ReadUInt32LittleEndian(source[4..]) == Check(chunk, digest);
    }

    private static uint Check(uint chunk, ulong digest) => ~(chunk * 0x9E3779B1u) ^ 0x4D4C4653u ^ (uint)digest ^ (uint)(digest >> 32);

    /// <summary>The digest stored per chunk: fast, non-cryptographic (SHA-256 did the verification).</summary>
    public static ulong Digest(ReadOnlySpan<byte> bytes) => System.IO.Hashing.XxHash3.HashToUInt64(bytes);

    /// <summary>Reads entries from <paramref name="offset"/> to the end of the record; returns the new end.</summary>
    public static long ReadEntries(SafeFileHandle record, long offset, Action<uint, ulong> onEntry)
    {
        long length = RandomAccess.GetLength(record);
        if (length <= offset) return offset;
        var buffer = new byte[length - offset];
        int read = RandomAccess.Read(record, buffer, offset);
        int usable = read - read % EntrySize;
        for (int i = 0; i < usable; i += EntrySize)
            if (TryReadEntry(buffer.AsSpan(i, EntrySize), out uint chunk, out ulong digest)) onEntry(chunk, digest);
        return offset + usable;
    }
}
