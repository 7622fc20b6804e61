using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace MlArtifactFs.Reading;

/// <summary>
/// Where a model file's tensors lie, and the order loaders read them in: parsed from the header of a
/// safetensors or GGUF file (recognised by its bytes, never by its name). The header is input: it is
/// read within <see cref="MaxHeaderBytes"/>, its tensor count is bounded, and every range is clipped
/// to the file, so a lying header costs at most fetches within the read-ahead budgets, never a wrong
/// byte (every byte is still verified by its chunk) and never more memory than the bound.
/// </summary>
public sealed class TensorLayout
{
    /// <summary>The most header this reads (the safetensors specification allows 100 MB; real ones are under 10).</summary>
    public const int MaxHeaderBytes = 64 << 20;

    /// <summary>The most tensors taken from one header.</summary>
    public const int MaxTensors = 1 << 20;

    private readonly long[] _starts, _ends;   // in load order
    private readonly int[] _byOffset;         // load positions sorted by start

    private TensorLayout(string format, long[] starts, long[] ends)
    {
        Format = format;
        _starts = starts;
        _ends = ends;
        _byOffset = [.. Enumerable.Range(0, starts.Length).OrderBy(i => starts[i])];
    }

    /// <summary>"safetensors" or "gguf".</summary>
    public string Format { get; }
    public int Count => _starts.Length;
    public long Start(int position) => _starts[position];
    public long End(int position) => _ends[position];
    public long Length(int position) => _ends[position] - _starts[position];

    /// <summary>The load-order position of the tensor holding byte <paramref name="offset"/>, or -1 (header, padding).</summary>
    public int At(long offset)
    {
        int lo = 0, hi = _byOffset.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_starts[_byOffset[mid]] <= offset) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found >= 0 && offset < _ends[_byOffset[found]] ? _byOffset[found] : -1;
    }

    /// <summary>What the first bytes of a file say: not a model file, a header of this many bytes still to read, or a format to parse.</summary>
    public enum Probe { NotAModel, NeedsMore, Ready }

    /// <summary>
    /// Looks at the first bytes of a file (at least 16, <paramref name="prefix"/>): how much header a
    /// parse needs (<paramref name="headerBytes"/>, within the bound), or that this is no model file.
    /// </summary>
    public static Probe Recognize(ReadOnlySpan<byte> prefix, long fileSize, out long headerBytes)
    {
        headerBytes = 0;
        if (prefix.Length < 16) return Probe.NeedsMore;
        if (prefix[..4].SequenceEqual("GGUF"u8))
        {
            uint version = BinaryPrimitives.ReadUInt32LittleEndian(prefix[4..]);
            if (version is not (2 or 3)) return Probe.NotAModel;
            headerBytes = Math.Min(fileSize, MaxHeaderBytes); // its length shows only while parsing: read up to the bound, in steps
            return Probe.Ready;
        }
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (length < 2 || length > MaxHeaderBytes || 8 + (long)length > fileSize || prefix[8] != (byte)'{') return Probe.NotAModel;
        headerBytes = 8 + (long)length;
        return Probe.Ready;
    }

    /// <summary>Parses a header (the first bytes of the file); null when it is not one mlfs can use.</summary>
    public static TensorLayout? Parse(ReadOnlySpan<byte> header, long fileSize) =>
        header.Length >= 4 && header[..4].SequenceEqual("GGUF"u8) ? ParseGguf(header, fileSize) : ParseSafetensors(header, fileSize);

    /// <summary>
    /// safetensors: u64 header length, a JSON object of name -> {dtype, shape, data_offsets [begin, end]}
    /// (relative to the end of the header), then the data. Loaders read tensors in the model's order,
    /// which for the usual names ("model.layers.10...") is the names' natural order (numbers as numbers),
    /// not the order the format's writer sorts them in: that is the load order taken here.
    /// </summary>
    private static TensorLayout? ParseSafetensors(ReadOnlySpan<byte> header, long fileSize)
    {
        if (header.Length < 8) return null;
        ulong declared = BinaryPrimitives.ReadUInt64LittleEndian(header);
        if (declared > (ulong)(header.Length - 8)) return null; // as unsigned: a length with the top bit set is no small one (found by fuzzing)
        long length = (long)declared;
        long dataStart = 8 + length;
        var tensors = new List<(string Name, long Start, long End)>();
        try
        {
            var reader = new Utf8JsonReader(header.Slice(8, (int)length), new JsonReaderOptions { MaxDepth = 8 });
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) return null;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                string name = reader.GetString()!;
                if (!reader.Read()) return null;
                if (name == "__metadata__" || reader.TokenType != JsonTokenType.StartObject)
                {
                    reader.Skip();
                    continue;
                }
                long begin = -1, end = -1;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    bool offsets = reader.ValueTextEquals("data_offsets"u8);
                    if (!reader.Read()) return null;
                    if (offsets && reader.TokenType == JsonTokenType.StartArray
                        && reader.Read() && reader.TryGetInt64(out begin) && reader.Read() && reader.TryGetInt64(out end) && reader.Read())
                    {
                        if (reader.TokenType != JsonTokenType.EndArray) return null;
                    }
                    else reader.Skip();
                }
                if (begin >= 0 && end > begin && end <= fileSize - dataStart && tensors.Count < MaxTensors) // no sum that can overflow: found by fuzzing
                    tensors.Add((name, dataStart + begin, dataStart + end));
            }
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return null; } // invalid UTF-8 in a name: found by fuzzing
        if (tensors.Count == 0) return null;
        tensors.Sort((a, b) => NaturalOrder.Compare(a.Name, b.Name));
        return new TensorLayout("safetensors", [.. tensors.Select(t => t.Start)], [.. tensors.Select(t => t.End)]);
    }

    /// <summary>
    /// GGUF v2/v3: magic, version, tensor count, metadata count, metadata (key, type, value), tensor infos
    /// (name, dims, type, offset from the aligned start of the data), then the data. A tensor's bytes end
    /// where the next one (by offset) starts. Loaders read tensors in their info order: the load order here.
    /// </summary>
    private static TensorLayout? ParseGguf(ReadOnlySpan<byte> header, long fileSize)
    {
        var r = new Cursor(header);
        if (!r.Skip(8) || !r.U64(out ulong count) || !r.U64(out ulong kvs) || count > MaxTensors || kvs > MaxTensors) return null;
        long alignment = 32;
        for (ulong i = 0; i < kvs; i++)
        {
            if (!r.String(out string key) || !r.U32(out uint type)) return null;
            if (key == "general.alignment" && type == 4 && r.U32(out uint align))
            {
                if (align == 0 || align > 1 << 20 || (align & (align - 1)) != 0) return null;
                alignment = align;
            }
            else if (!r.SkipValue(type, depth: 0)) return null;
        }
        var offsets = new List<long>((int)count);
        for (ulong i = 0; i < count; i++)
        {
            if (!r.String(out _) || !r.U32(out uint dims) || dims > 8 || !r.Skip(8 * (int)dims) || !r.U32(out _) || !r.U64(out ulong offset)) return null;
            offsets.Add(offset > (ulong)fileSize ? -1 : (long)offset);
        }
        long dataStart = (r.Position + alignment - 1) / alignment * alignment;
        var sorted = offsets.Where(o => o >= 0).Select(o => dataStart + o).Where(o => o < fileSize).Distinct().Order().ToArray();
        if (sorted.Length == 0) return null;
        long EndOf(long start)
        {
            int i = Array.BinarySearch(sorted, start);
            return i + 1 < sorted.Length ? sorted[i + 1] : fileSize;
        }
        var starts = offsets.Where(o => o >= 0 && dataStart + o < fileSize).Select(o => dataStart + o).Distinct().ToArray();
        return new TensorLayout("gguf", starts, [.. starts.Select(EndOf)]);
    }

    /// <summary>A bounds-checked little-endian reader over a GGUF header (input: every read can fail).</summary>
    private ref struct Cursor(ReadOnlySpan<byte> bytes)
    {
        private readonly ReadOnlySpan<byte> _bytes = bytes;
        public int Position { get; private set; }

        public bool Skip(int n)
        {
            if (n < 0 || n > _bytes.Length - Position) return false;
            Position += n;
            return true;
        }

        public bool U32(out uint value)
        {
            value = 0;
            if (_bytes.Length - Position < 4) return false;
            value = BinaryPrimitives.ReadUInt32LittleEndian(_bytes[Position..]);
            Position += 4;
            return true;
        }

        public bool U64(out ulong value)
        {
            value = 0;
            if (_bytes.Length - Position < 8) return false;
            value = BinaryPrimitives.ReadUInt64LittleEndian(_bytes[Position..]);
            Position += 8;
            return true;
        }

        public bool String(out string value)
        {
            value = "";
            if (!U64(out ulong length) || length > 1 << 16 || (int)length > _bytes.Length - Position) return false;
            value = Encoding.UTF8.GetString(_bytes.Slice(Position, (int)length));
            Position += (int)length;
            return true;
        }

        /// <summary>Skips a metadata value of GGUF type <paramref name="type"/> (arrays nest at most twice).</summary>
        public bool SkipValue(uint type, int depth)
        {
            switch (type)
            {
                case 0 or 1 or 7: return Skip(1);
                case 2 or 3: return Skip(2);
                case 4 or 5 or 6: return Skip(4);
                case 10 or 11 or 12: return Skip(8);
                case 8: return String(out _);
                case 9:
                    if (depth > 1 || !U32(out uint inner) || !U64(out ulong n) || n > (ulong)_bytes.Length) return false;
                    for (ulong i = 0; i < n; i++)
                        if (!SkipValue(inner, depth + 1)) return false;
                    return true;
                default: return false;
            }
        }
    }
}

/// <summary>Names compared with their digit runs as numbers: "layers.2" before "layers.10", as models number their layers.</summary>
internal static class NaturalOrder
{
    public static int Compare(string a, string b)
    {
        int i = 0, j = 0;
        while (i < a.Length && j < b.Length)
        {
            if (char.IsAsciiDigit(a[i]) && char.IsAsciiDigit(b[j]))
            {
                int si = i, sj = j;
                while (i < a.Length && char.IsAsciiDigit(a[i])) i++;
                while (j < b.Length && char.IsAsciiDigit(b[j])) j++;
                var x = a.AsSpan(si, i - si).TrimStart('0');
                var y = b.AsSpan(sj, j - sj).TrimStart('0');
                if (x.Length != y.Length) return x.Length - y.Length;
                int c = x.SequenceCompareTo(y);
                if (c != 0) return c;
                continue;
            }
            if (a[i] != b[j]) return a[i] - b[j];
            i++;
            j++;
        }
        return (a.Length - i) - (b.Length - j);
    }
}
