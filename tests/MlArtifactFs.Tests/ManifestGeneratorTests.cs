using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using MlArtifactFs.Cache;
using MlArtifactFs.Manifest;

namespace MlArtifactFs.Tests;

public sealed class ManifestGeneratorTests : IDisposable
{
    private const int Chunk = 64 * 1024;
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mlfs-gen-");

    public void Dispose() => _dir.Delete(recursive: true);

    private string Write(string relative, byte[] bytes)
    {
        string path = Path.Combine(_dir.FullName, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static string Sha256Sum(string path)
    {
        var psi = new ProcessStartInfo("sha256sum") { RedirectStandardOutput = true };
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return output.Split(' ')[0];
    }

    /// <summary>
    /// `generate` streams its manifest as files are hashed (many files, hashed a batch at a time on every core);
    /// what it writes is byte for byte the serialized in-memory manifest, in both hash kinds and the seed format.
    /// </summary>
    [Theory]
    [InlineData(ChunkHashAlgorithm.Blake3, false)]
    [InlineData(ChunkHashAlgorithm.Sha256, false)]
    [InlineData(ChunkHashAlgorithm.Blake3, true)]
    public async Task TheStreamedManifestIsExactlyTheSerializedOne(ChunkHashAlgorithm hash, bool seedFormat)
    {
        for (int i = 0; i < 150; i++) Write($"shards/{i % 7}/part-{i:000}.bin", RandomBytes(i * 97 % 3000, i));
        Write("big.bin", RandomBytes(5 * Chunk + 3, 99));
        Write("with space/tokenizer ü 模型 +&.json", RandomBytes(10, 5));
        Write("empty.bin", []);
        var options = new GenerateOptions("model", "v1", "s3://bucket/m", ["big.bin"], Chunk, "/models/m", hash);

        var inMemory = await ManifestGenerator.GenerateAsync(_dir.FullName, options);
        if (seedFormat) inMemory.ToSeedFormat();
        using var streamed = new MemoryStream();
        var (count, bytes) = await ManifestGenerator.WriteAsync(_dir.FullName, options, streamed, seedFormat);

        Assert.Equal(ManifestLoader.Serialize(inMemory) + "\n", System.Text.Encoding.UTF8.GetString(streamed.ToArray()));
        Assert.Equal(153, count);
        Assert.Equal(inMemory.Files!.Sum(f => f.Size!.Value), bytes);
        Assert.Equal(153, ManifestLoader.Parse(streamed.ToArray(), "streamed").Files!.Count);
    }

    [Fact]
    public async Task HashesMatchSha256sumAndEveryChunkRange()
    {
        var files = new Dictionary<string, byte[]>
        {
            ["config.json"] = "{\"a\": 1}"u8.ToArray(),
            ["empty.bin"] = [],
            ["one-chunk.bin"] = RandomBytes(Chunk, 1),
            ["one-chunk-plus-one.bin"] = RandomBytes(Chunk + 1, 2),
            ["nested/deeper/three-chunks.bin"] = RandomBytes(3 * Chunk, 3),
            ["with space/tokenizer ü 模型.json"] = RandomBytes(1000, 4),
        };
        foreach (var (path, bytes) in files) Write(path, bytes);

        var m = await ManifestGenerator.GenerateAsync(_dir.FullName,
            new GenerateOptions("model", "v1", "s3://bucket/models/v1/", ["config.json"], Chunk, ChunkHash: ChunkHashAlgorithm.Sha256));

        Assert.Null(m.ChunkHash); // SHA-256 chunk hashes: the manifest exactly as earlier versions wrote it
        Assert.Equal(files.Keys.Order(StringComparer.Ordinal), m.Files!.Select(f => f.Path));
        Assert.Equal(Chunk, m.ChunkSize);
        Assert.Equal(["config.json"], m.Prefetch);
        foreach (var f in m.Files!)
        {
            var bytes = files[f.Path!];
            Assert.Equal(bytes.Length, f.Size);
            Assert.Equal(Sha256Sum(Path.Combine(_dir.FullName, f.Path!)), f.Sha256);
            Assert.Equal("none", f.Compression);
            int expectedChunks = (bytes.Length + Chunk - 1) / Chunk;
            Assert.Equal(expectedChunks, f.Chunks!.Count);
            for (int c = 0; c < expectedChunks; c++)
            {
                var range = bytes.AsSpan(c * Chunk, Math.Min(Chunk, bytes.Length - c * Chunk));
                Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(range)), f.Chunks[c]);
            }
        }
        Assert.Equal("s3://bucket/models/v1/with%20space/tokenizer%20%C3%BC%20%E6%A8%A1%E5%9E%8B.json",
            m.Files.Single(f => f.Path!.StartsWith("with", StringComparison.Ordinal)).Url);
        Assert.Empty(m.Files.Single(f => f.Path == "empty.bin").Chunks!);
    }

    /// <summary>BLAKE3 of a file by the reference implementation's command line (Debian's b3sum), not by the library mlfs uses.</summary>
    private static string B3Sum(string path)
    {
        var psi = new ProcessStartInfo("b3sum") { RedirectStandardOutput = true };
        psi.ArgumentList.Add("--no-names");
        psi.ArgumentList.Add(path);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
        return output;
    }

    [Fact]
    public async Task ChunkHashesAreBlake3ByDefaultAndMatchTheReferenceImplementation()
    {
        // Sizes around BLAKE3's 1 KiB chunks and its tree's powers of two, and a short last chunk.
        var files = new Dictionary<string, byte[]>
        {
            ["a.bin"] = RandomBytes(3 * Chunk + 1025, 7),
            ["b.bin"] = RandomBytes(1023, 8),
            ["c.bin"] = RandomBytes(Chunk, 9),
        };
        foreach (var (path, bytes) in files) Write(path, bytes);
        var m = await ManifestGenerator.GenerateAsync(_dir.FullName, new GenerateOptions("m", "v1", "s3://b/p", [], Chunk));
        Assert.Equal("blake3", m.ChunkHash);
        var pieces = Directory.CreateTempSubdirectory("mlfs-b3-");
        try
        {
            foreach (var f in m.Files!)
            {
                var bytes = files[f.Path!];
                Assert.Equal(Sha256Sum(Path.Combine(_dir.FullName, f.Path!)), f.Sha256); // the whole-file hash stays SHA-256
                for (int c = 0; c < f.Chunks!.Count; c++)
                {
                    string piece = Path.Combine(pieces.FullName, $"{f.Path}.{c}");
                    File.WriteAllBytes(piece, bytes.AsSpan(c * Chunk, Math.Min(Chunk, bytes.Length - c * Chunk)).ToArray());
                    Assert.Equal(B3Sum(piece), f.Chunks[c]);
                }
            }
        }
        finally { pieces.Delete(recursive: true); }
        // And a test vector of the BLAKE3 specification: the empty input.
        Assert.Equal("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262", Convert.ToHexStringLower(Blake3.Hasher.Hash([]).AsSpan()));
    }

    [Fact]
    public async Task OutputLoadsBackThroughTheValidator()
    {
        Write("a/b.bin", RandomBytes(10, 5));
        var m = await ManifestGenerator.GenerateAsync(_dir.FullName, new GenerateOptions("m", "v2", "https://host/p", [], Chunk));
        var again = ManifestLoader.Parse(ManifestLoader.Serialize(m));
        Assert.Equal("https://host/p/a/b.bin", again.Files![0].Url);
    }

    [Fact]
    public async Task SymlinkToAFileInsideIsFollowed()
    {
        Write("real.bin", RandomBytes(100, 6));
        File.CreateSymbolicLink(Path.Combine(_dir.FullName, "alias.bin"), "real.bin");
        var m = await ManifestGenerator.GenerateAsync(_dir.FullName, new GenerateOptions("m", "v1", "s3://b/p", [], Chunk));
        var alias = m.Files!.Single(f => f.Path == "alias.bin");
        Assert.Equal(100, alias.Size);
        Assert.Equal(m.Files!.Single(f => f.Path == "real.bin").Sha256, alias.Sha256);
    }

    [Fact]
    public async Task SymlinkLeavingTheFolderIsAnErrorNamingIt()
    {
        var outside = Path.GetTempFileName();
        try
        {
            File.CreateSymbolicLink(Path.Combine(_dir.FullName, "escape.bin"), outside);
            var e = await Assert.ThrowsAsync<IOException>(() => ManifestGenerator.GenerateAsync(_dir.FullName, new GenerateOptions("m", "v1", "s3://b/p", [], Chunk)));
            Assert.Contains("escape.bin: symbolic link points outside the model folder", e.Message);
        }
        finally { File.Delete(outside); }
    }

    [Fact]
    public async Task SocketIsAnErrorNamingIt()
    {
        string path = Path.Combine(_dir.FullName, "sub", "control.sock");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        var e = await Assert.ThrowsAsync<IOException>(() => ManifestGenerator.GenerateAsync(_dir.FullName, new GenerateOptions("m", "v1", "s3://b/p", [], Chunk)));
        Assert.Equal("sub/control.sock: is a socket, which a model folder cannot contain", e.Message);
    }

    [Fact]
    public async Task PrefetchOfAMissingFileIsAnError()
    {
        Write("config.json", [1]);
        var e = await Assert.ThrowsAsync<ArgumentException>(() => ManifestGenerator.GenerateAsync(_dir.FullName,
            new GenerateOptions("m", "v1", "s3://b/p", ["tokenizer.json"], Chunk)));
        Assert.Contains("tokenizer.json", e.Message);
    }
}
