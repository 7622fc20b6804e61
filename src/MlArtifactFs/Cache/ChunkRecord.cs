using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace MlArtifactFs.Cache;

/// <summary>
/// The persisted record of a chunked blob: an append-only log next to its sparse data file.
/// A 64-byte header (magic, chunk size, file size, the chunk hash algorithm at byte 24 (0 = SHA-256,
/// as every record before BLAKE3), the blob's chunk-list id) then 48-byte entries: chunk index, kind,
/// the chunk's digest, and a check word over the entry.
/// <list type="bullet">
/// <item><c>Verified</c> is appended only after the chunk's bytes matched its digest in memory and were
/// written, so after a crash (even kill -9 mid-write) no entry names bytes that are not there.</item>
/// <item><c>Dropped</c> takes a chunk back (its bytes on disk were found damaged); the last entry of a
/// chunk wins. A damaged region is dropped first and only then rewritten from verified bytes.</item>
/// </list>
/// Entries are appended with O_APPEND as single writes, so processes sharing the cache never
/// interleave inside one. A torn or garbage entry fails its check and is skipped.
/// The record is a hint, never proof: a process that did not verify a chunk itself checks its bytes
/// against the reading manifest's chunk hash before serving them (<see cref="CachedBlob"/>).
/// </summary>
internal static class ChunkRecord
{
    public const int HeaderSize = 64;
    public const int EntrySize = 48;
    public const uint Verified = 1, Dropped = 2;
    private static ReadOnlySpan<byte> Magic => "MLFSREC3"u8;

    public static byte[] Header(BlobDescriptor blob)
    {
        var header = new byte[HeaderSize];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(8), blob.ChunkSize);
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(16), blob.Size);
        header[24] = (byte)blob.Algorithm;
        blob.ChunkListId().CopyTo(header.AsSpan(32));
        return header;
    }

    public static bool HeaderMatches(ReadOnlySpan<byte> header, BlobDescriptor blob) =>
        header.Length >= HeaderSize && header.SequenceEqual(Header(blob));

    /// <summary>Reads the chunk size, file size and algorithm of a header (for a check of the cache without manifests).</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> header, out long chunkSize, out long size, out ChunkHashAlgorithm algorithm)
    {
        chunkSize = size = 0;
        algorithm = ChunkHashAlgorithm.Sha256;
        if (header.Length < HeaderSize || !header[..8].SequenceEqual(Magic) || header[24] > (byte)ChunkHashAlgorithm.Blake3) return false;
        chunkSize = BinaryPrimitives.ReadInt64LittleEndian(header[8..]);
        size = BinaryPrimitives.ReadInt64LittleEndian(header[16..]);
        algorithm = (ChunkHashAlgorithm)header[24];
        return chunkSize > 0 && size >= 0;
    }

    public static void WriteEntry(Span<byte> destination, uint chunk, uint kind, ReadOnlySpan<byte> digest)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(destination, chunk);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], kind);
        digest.CopyTo(destination[8..40]);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[40..], Check(destination[..40]));
    }

    public readonly record struct Entry(uint Chunk, uint Kind, byte[] Digest);

    public static bool TryReadEntry(ReadOnlySpan<byte> source, out Entry entry)
    {
        entry = default;
        if (BinaryPrimitives.ReadUInt64LittleEndian(source[40..]) != Check(source[..40])) return false;
        uint kind = BinaryPrimitives.ReadUInt32LittleEndian(source[4..]);
        if (kind is not (Verified or Dropped)) return false;
        entry = new Entry(BinaryPrimitives.ReadUInt32LittleEndian(source), kind, source[8..40].ToArray());
        return true;
    }

    private static ulong Check(ReadOnlySpan<byte> body) => System.IO.Hashing.XxHash3.HashToUInt64(body, seed: 0x4D4C4653_52454333);

    /// <summary>
    /// Reads entries from <paramref name="offset"/> to the end of the record; returns where the next read
    /// starts (an entry still being appended is read next time). A torn entry (a crash mid-append) is
    /// skipped byte by byte until a valid entry follows, so the shared record is never truncated and
    /// entries other processes append after it stay readable.
    /// </summary>
    public static long ReadEntries(SafeFileHandle record, long offset, Action<Entry> onEntry)
    {
        long length = RandomAccess.GetLength(record);
        if (length <= offset) return offset;
        var buffer = new byte[length - offset];
        int read = RandomAccess.Read(record, buffer, offset);
        int i = 0;
        while (read - i >= EntrySize)
        {
            if (TryReadEntry(buffer.AsSpan(i, EntrySize), out var entry))
            {
                onEntry(entry);
                i += EntrySize;
            }
            else i++;
        }
        return offset + i;
    }
}
