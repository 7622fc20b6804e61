using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using MlArtifactFs.Reading;

namespace MlArtifactFs.Tests;

/// <summary>Model file headers as input: recognised by their bytes, parsed within bounds, never trusted past the file.</summary>
public sealed class TensorLayoutTests
{
    /// <summary>A safetensors file's first bytes: the u64 length, then the JSON header; data follows (not needed here).</summary>
    private static byte[] Safetensors(IEnumerable<(string Name, long Bytes)> tensors, bool metadata, out long fileSize)
    {
        var header = new Dictionary<string, object>();
        if (metadata) header["__metadata__"] = new Dictionary<string, string> { ["format"] = "pt" };
        long offset = 0;
        foreach (var (name, bytes) in tensors.OrderBy(t => t.Name, StringComparer.Ordinal)) // the writer's order: by name
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = "F32", ["shape"] = new[] { bytes / 4 }, ["data_offsets"] = new[] { offset, offset + bytes } };
            offset += bytes;
        }
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(header);
        var file = new byte[8 + json.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)json.Length);
        json.CopyTo(file, 8);
        fileSize = file.Length + offset;
        return file;
    }

    private static byte[] Str(string s) => [.. BitConverter.GetBytes((ulong)Encoding.UTF8.GetByteCount(s)), .. Encoding.UTF8.GetBytes(s)];

    /// <summary>A GGUF header: metadata (an alignment, a string, an array of strings as a tokenizer has), tensor infos in load order.</summary>
    private static byte[] Gguf(uint version, IReadOnlyList<(string Name, long Bytes)> tensors, uint alignment, out long fileSize, out long dataStart)
    {
        var head = new List<byte>();
        head.AddRange("GGUF"u8.ToArray());
        head.AddRange(BitConverter.GetBytes(version));
        head.AddRange(BitConverter.GetBytes((ulong)tensors.Count));
        head.AddRange(BitConverter.GetBytes(3UL));
        head.AddRange(Str("general.name")); head.AddRange(BitConverter.GetBytes(8u)); head.AddRange(Str("test model"));
        head.AddRange(Str("tokenizer.ggml.tokens")); head.AddRange(BitConverter.GetBytes(9u)); head.AddRange(BitConverter.GetBytes(8u));
        head.AddRange(BitConverter.GetBytes(3UL)); head.AddRange(Str("a")); head.AddRange(Str("bb")); head.AddRange(Str("ccc"));
        head.AddRange(Str("general.alignment")); head.AddRange(BitConverter.GetBytes(4u)); head.AddRange(BitConverter.GetBytes(alignment));
        long offset = 0;
        foreach (var (name, bytes) in tensors)
        {
            head.AddRange(Str(name));
            head.AddRange(BitConverter.GetBytes(1u));
            head.AddRange(BitConverter.GetBytes((ulong)(bytes / 4)));
            head.AddRange(BitConverter.GetBytes(0u)); // F32
            head.AddRange(BitConverter.GetBytes((ulong)offset));
            offset += (bytes + alignment - 1) / alignment * alignment;
        }
        dataStart = (head.Count + alignment - 1) / alignment * alignment;
        fileSize = dataStart + offset;
        return [.. head];
    }

    private static readonly (string, long)[] Model =
    [
        ("model.layers.10.mlp.weight", 4096), ("model.layers.2.mlp.weight", 8192), ("model.layers.1.mlp.weight", 1024),
        ("embed.weight", 2048), ("model.layers.0.mlp.weight", 512),
    ];

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void SafetensorsTensorsAreFoundAndOrderedAsModelsLoadThem(bool metadata)
    {
        var file = Safetensors(Model, metadata, out long size);
        Assert.Equal(TensorLayout.Probe.Ready, TensorLayout.Recognize(file, size, out long headerBytes));
        Assert.Equal(file.Length, headerBytes);
        var layout = TensorLayout.Parse(file, size)!;
        Assert.Equal("safetensors", layout.Format);
        Assert.Equal(5, layout.Count);
        // Natural order: embed, layers 0, 1, 2, 10 (the file holds them by name: embed, 0, 1, 10, 2).
        long[] expectedLengths = [2048, 512, 1024, 8192, 4096];
        Assert.Equal(expectedLengths, Enumerable.Range(0, 5).Select(layout.Length));
        Assert.Equal(file.Length, Enumerable.Range(0, 5).Min(layout.Start)); // data starts right after the header
        Assert.Equal(size, Enumerable.Range(0, 5).Max(layout.End));
        for (int p = 0; p < 5; p++) Assert.Equal(p, layout.At(layout.Start(p) + layout.Length(p) / 2));
        Assert.Equal(-1, layout.At(3)); // the header is no tensor
    }

    [Theory]
    [InlineData(2u, 32u)]
    [InlineData(3u, 32u)]
    [InlineData(3u, 64u)]
    public void GgufTensorsAreFoundInTheirInfoOrder(uint version, uint alignment)
    {
        var tensors = Model.ToList();
        var head = Gguf(version, tensors, alignment, out long size, out long dataStart);
        Assert.Equal(TensorLayout.Probe.Ready, TensorLayout.Recognize(head, size, out _));
        var layout = TensorLayout.Parse(head, size)!;
        Assert.Equal("gguf", layout.Format);
        Assert.Equal(tensors.Count, layout.Count);
        Assert.Equal(dataStart, layout.Start(0));
        for (int p = 1; p < tensors.Count; p++) Assert.True(layout.Start(p) > layout.Start(p - 1), "info order is offset order here");
        Assert.Equal((tensors[0].Item2 + alignment - 1) / alignment * alignment, layout.Length(0)); // a tensor ends where the next begins
        Assert.Equal(size, layout.End(tensors.Count - 1));
    }

    [Fact]
    public void HeadersThatLieOrEndEarlyAreRefusedWithoutThrowing()
    {
        var file = Safetensors(Model, true, out long size);
        // A length beyond the bound, beyond the file, or no JSON after it.
        var huge = (byte[])file.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(huge, ulong.MaxValue);
        Assert.Equal(TensorLayout.Probe.NotAModel, TensorLayout.Recognize(huge, size, out _));
        BinaryPrimitives.WriteUInt64LittleEndian(huge, (ulong)size);
        Assert.Equal(TensorLayout.Probe.NotAModel, TensorLayout.Recognize(huge, size, out _));
        Assert.Equal(TensorLayout.Probe.NotAModel, TensorLayout.Recognize(new byte[64], size, out _));
        // Truncated: null, never an exception or a partial layout.
        for (int cut = 0; cut < file.Length; cut += 7) Assert.Null(TensorLayout.Parse(file.AsSpan(0, cut), size));
        var gguf = Gguf(3, Model, 32, out long ggufSize, out _);
        for (int cut = 0; cut < gguf.Length; cut += 5) Assert.Null(TensorLayout.Parse(gguf.AsSpan(0, cut), ggufSize));
        // Offsets past the end of the file name nothing: those tensors are left out.
        var layout = TensorLayout.Parse(file, size - 4096)!;
        Assert.All(Enumerable.Range(0, layout.Count), p => Assert.True(layout.End(p) <= size - 4096));
        // GGUF v1 (other count widths) and counts no header can hold.
        var v1 = (byte[])gguf.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(v1.AsSpan(4), 1);
        Assert.Equal(TensorLayout.Probe.NotAModel, TensorLayout.Recognize(v1, ggufSize, out _));
        var many = (byte[])gguf.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(many.AsSpan(8), ulong.MaxValue);
        Assert.Null(TensorLayout.Parse(many, ggufSize));
    }

    [Fact]
    public void RandomAndMutatedHeadersNeverThrow()
    {
        var random = new Random(7);
        var seeds = new[] { Safetensors(Model, true, out long s1), Gguf(3, Model, 32, out long s2, out _) };
        long[] sizes = [s1, s2];
        for (int i = 0; i < 4000; i++)
        {
            int which = i % 2;
            var bytes = (byte[])seeds[which].Clone();
            for (int k = 0; k < 1 + random.Next(8); k++) bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            var probe = TensorLayout.Recognize(bytes, sizes[which], out long need);
            if (probe == TensorLayout.Probe.Ready) Assert.InRange(need, 0, TensorLayout.MaxHeaderBytes);
            var layout = TensorLayout.Parse(bytes, sizes[which]);
            if (layout is null) continue;
            for (int p = 0; p < layout.Count; p++)
                Assert.True(layout.Start(p) >= 0 && layout.End(p) <= sizes[which] && layout.End(p) > layout.Start(p),
                    $"{layout.Format} tensor {p}: {layout.Start(p)}-{layout.End(p)} in a file of {sizes[which]}");
        }
    }

    [Fact]
    public void ReadAheadFollowsTheLoadOrderAndStopsForJumpsAndPartialReaders()
    {
        // 40 tensors of 4 MiB, stored by name (so model order jumps around the file).
        var tensors = Enumerable.Range(0, 40).Select(i => ($"model.layers.{i}.weight", 4L << 20)).ToArray();
        var head = Safetensors(tensors, false, out long size);
        var layout = TensorLayout.Parse(head, size)!;
        const long Min = 16L << 20, Max = 128L << 20;

        // A full loader in model order: each tensor read whole, in 1 MiB READs.
        var loader = new TensorReadAhead(layout, Min, Max);
        long requested = 0;
        for (int p = 0; p < 12; p++)
            for (long o = layout.Start(p); o < layout.End(p); o += 1 << 20)
                requested += loader.OnRead(o, 1 << 20).Sum(r => r.Length);
        Assert.True(loader.Window >= 64L << 20, $"window {loader.Window}");
        Assert.True(requested >= 12L * (4 << 20), $"only {requested} bytes requested ahead");

        // Random 4 KiB reads: after the first access, nothing more is fetched ahead.
        var random = new TensorReadAhead(layout, Min, Max);
        var rng = new Random(3);
        random.OnRead(layout.Start(20), 4096);
        long randomAhead = 0;
        for (int i = 0; i < 50; i++) randomAhead += random.OnRead(layout.Start(rng.Next(40)) + rng.Next(1 << 20), 4096).Sum(r => r.Length);
        Assert.True(randomAhead <= 2 * Min, $"random reads requested {randomAhead} bytes ahead");

        // A rank reading its quarter of each tensor, in order: it stops asking for whole tensors.
        var rank = new TensorReadAhead(layout, Min, Max);
        long rankAhead = 0;
        for (int p = 0; p < 40; p++) rankAhead += rank.OnRead(layout.Start(p) + (1 << 20), 1 << 20).Sum(r => r.Length);
        Assert.True(rankAhead <= 3 * Min, $"a partial reader requested {rankAhead} bytes of whole tensors");
    }

    [Fact]
    public void NamesCompareWithNumbersAsNumbers()
    {
        string[] names = ["layers.10.w", "layers.2.w", "layers.1.w", "embed", "layers.1.b", "layers.100.w", "layers.9.w"];
        Array.Sort(names, NaturalOrder.Compare);
        Assert.Equal(["embed", "layers.1.b", "layers.1.w", "layers.2.w", "layers.9.w", "layers.10.w", "layers.100.w"], names);
    }
}
