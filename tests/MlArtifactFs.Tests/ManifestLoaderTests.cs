using System.Text.Json.Nodes;
using MlArtifactFs.Manifest;

namespace MlArtifactFs.Tests;

public class ManifestLoaderTests
{
    private const string Sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// <summary>The seed's own example format, unchanged.</summary>
    private const string SeedManifest = """
        {
          "artifact_id": "distilbert",
          "version": "v1",
          "mount_path": "/mnt/model",
          "prefetch": ["config.json", "tokenizer.json"],
          "files": [
            { "path": "config.json", "url": "https://my-models.s3.amazonaws.com/distilbert/v1/config.json",
              "size": 1234, "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "compression": "none" },
            { "path": "tokenizer.json", "url": "https://my-models.s3.amazonaws.com/distilbert/v1/tokenizer.json",
              "size": 0, "sha256": "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", "compression": "none" },
            { "path": "weights/model.safetensors", "url": "s3://my-models/distilbert/v1/weights/model.safetensors",
              "size": 268000000, "sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", "compression": "none" }
          ]
        }
        """;

    [Fact]
    public void SeedManifestLoads()
    {
        var m = ManifestLoader.Parse(SeedManifest);
        Assert.Equal("distilbert", m.ArtifactId);
        Assert.Equal(3, m.Files!.Count);
        Assert.Null(m.ChunkSize);
        Assert.Equal(ModelManifest.DefaultChunkSize, m.EffectiveChunkSize);
        Assert.Equal(Sha, m.Files[1].Sha256); // hex normalised to lower case
    }

    [Fact]
    public void SeedManifestRoundTripsWithoutLoss()
    {
        string withUnknownField = SeedManifest.Replace("\"version\": \"v1\",", "\"version\": \"v1\", \"created_by\": {\"tool\": \"seed\"},", StringComparison.Ordinal)
            .Replace("E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", Sha, StringComparison.Ordinal);
        var m = ManifestLoader.Parse(withUnknownField);
        string again = ManifestLoader.Serialize(m);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(withUnknownField), JsonNode.Parse(again)), again);
        Assert.DoesNotContain("chunk_size", again);
        Assert.DoesNotContain("chunks", again);
    }

    [Fact]
    public void ChunkedManifestLoads()
    {
        var m = ManifestLoader.Parse(Manifest(chunkSize: "4", files: File("a.bin", size: 9, chunks: [Sha, Sha, Sha])));
        Assert.Equal(4, m.ChunkSize);
        Assert.Equal(3, m.Files![0].Chunks!.Count);
    }

    private static string File(string path, long size = 1, string sha = Sha, string? url = null, string[]? chunks = null,
        string compression = "none", string? raw = null)
    {
        if (raw is not null) return raw;
        string chunkJson = chunks is null ? "" : $", \"chunks\": [{string.Join(",", chunks.Select(c => $"\"{c}\""))}]";
        return $"{{\"path\": {System.Text.Json.JsonSerializer.Serialize(path)}, \"url\": \"{url ?? "s3://bucket/file"}\", \"size\": {size}, \"sha256\": \"{sha}\", \"compression\": \"{compression}\"{chunkJson}}}";
    }

    private static string Manifest(string files, string prefetch = "[]", string? chunkSize = null) =>
        $"{{\"artifact_id\": \"m\", \"version\": \"v1\"{(chunkSize is null ? "" : $", \"chunk_size\": {chunkSize}")}, \"prefetch\": {prefetch}, \"files\": [{files}]}}";

    private static string ProblemsOf(string json)
    {
        var e = Assert.Throws<ManifestException>(() => ManifestLoader.Parse(json, "test.json"));
        Assert.StartsWith("invalid manifest test.json", e.Message);
        return e.Message;
    }

    [Fact]
    public void MalformedJsonNamesLineAndPosition()
    {
        string message = ProblemsOf("{\n  \"artifact_id\": \"m\",\n  \"version\": v1\n}");
        Assert.Contains("malformed JSON at line 3, position", message);
    }

    [Fact]
    public void TopLevelMustBeAnObject() => Assert.Contains("top level must be a JSON object", ProblemsOf("[1, 2]"));

    [Fact]
    public void MissingTopLevelField() =>
        Assert.Contains("missing required field \"artifact_id\"", ProblemsOf("{\"version\": \"v1\", \"files\": []}"));

    [Fact]
    public void MissingFileFieldNamesTheEntry() =>
        Assert.Contains("files[1] (\"b.bin\"): missing required field \"sha256\"",
            ProblemsOf(Manifest(File("a.bin") + "," + File("b.bin", raw: "{\"path\": \"b.bin\", \"url\": \"s3://b/b.bin\", \"size\": 1}"))));

    [Fact]
    public void WrongTypeNamesTheEntry() =>
        Assert.Contains("files[0] (\"a.bin\"): \"size\" must be a number, found a string",
            ProblemsOf(Manifest(File("a.bin", raw: $"{{\"path\": \"a.bin\", \"url\": \"s3://b/a\", \"size\": \"12\", \"sha256\": \"{Sha}\"}}"))));

    [Fact]
    public void FractionalSizeIsRefused() =>
        Assert.Contains("files[0] (\"a.bin\"): size must be a whole number",
            ProblemsOf(Manifest(File("a.bin", raw: $"{{\"path\": \"a.bin\", \"url\": \"s3://b/a\", \"size\": 1.5, \"sha256\": \"{Sha}\"}}"))));

    [Fact]
    public void NegativeSize() => Assert.Contains("files[0] (\"a.bin\"): size must not be negative, found -5", ProblemsOf(Manifest(File("a.bin", size: -5))));

    [Fact]
    public void BadHex() => Assert.Contains("files[0] (\"a.bin\"): sha256 must be 64 hex digits", ProblemsOf(Manifest(File("a.bin", sha: "xyz"))));

    [Fact]
    public void BadChunkHex() =>
        Assert.Contains("files[0] (\"a.bin\"): chunks[1] must be 64 hex digits",
            ProblemsOf(Manifest(File("a.bin", size: 8, chunks: [Sha, "00"]), chunkSize: "4")));

    [Fact]
    public void ChunkListThatDoesNotMatchSize() =>
        Assert.Contains("files[0] (\"a.bin\"): has 2 chunk hashes but size 9 with chunk_size 4 needs 3",
            ProblemsOf(Manifest(File("a.bin", size: 9, chunks: [Sha, Sha]), chunkSize: "4")));

    [Fact]
    public void ChunksWithoutChunkSize() =>
        Assert.Contains("files[0] (\"a.bin\"): has chunks but the manifest has no valid chunk_size",
            ProblemsOf(Manifest(File("a.bin", size: 4, chunks: [Sha]))));

    [Fact]
    public void ZeroChunkSize() => Assert.Contains("chunk_size must be between 1 and", ProblemsOf(Manifest(File("a.bin"), chunkSize: "0")));

    [Fact]
    public void DuplicatePaths() =>
        Assert.Contains("files[1] (\"a.bin\"): duplicate path, also files[0]", ProblemsOf(Manifest(File("a.bin") + "," + File("a.bin"))));

    [Fact]
    public void PathThatIsBothFileAndDirectory() =>
        Assert.Contains("files[0] (\"a\"): is a file but files[1] (\"a/b.bin\") needs it to be a directory",
            ProblemsOf(Manifest(File("a") + "," + File("a/b.bin"))));

    [Theory]
    [InlineData("/etc/passwd", "must be relative")]
    [InlineData("../secret", "contains a '..' segment")]
    [InlineData("a/../../b", "contains a '..' segment")]
    [InlineData("a/./b", "contains a '.' segment")]
    [InlineData("a//b", "has an empty segment")]
    [InlineData("a/", "has an empty segment")]
    [InlineData("", "is empty")]
    [InlineData("a\\b", "must use '/' as separator (it contains a backslash)")]
    [InlineData("a\u0000b", "contains a NUL character")]
    [InlineData("a\u0007b", "contains the control character U+0007")]
    public void BadPathsAreRejectedNamingTheEntry(string path, string problem)
    {
        string message = ProblemsOf(Manifest(File(path)));
        Assert.Contains("files[0] (\"", message);
        Assert.Contains("path " + problem, message);
    }

    [Fact]
    public void OverlongSegment() => Assert.Contains("longer than 255 bytes", ProblemsOf(Manifest(File(new string('x', 256)))));

    [Fact]
    public void PrefetchOfUnknownFile() =>
        Assert.Contains("prefetch[1] (\"tokenizer.json\"): names no file in files",
            ProblemsOf(Manifest(File("config.json"), prefetch: "[\"config.json\", \"tokenizer.json\"]")));

    [Fact]
    public void CompressionOtherThanNone() =>
        Assert.Contains("files[0] (\"a.bin\"): compression \"gzip\" is not supported", ProblemsOf(Manifest(File("a.bin", compression: "gzip"))));

    [Theory]
    [InlineData("ftp://host/a.bin", "scheme \"ftp\" is not supported")]
    [InlineData("file:///etc/passwd", "scheme \"file\" is not supported")]
    [InlineData("not a url", "\"not a url\" is not an absolute URL")]
    public void UnsupportedUrls(string url, string problem) =>
        Assert.Contains($"files[0] (\"a.bin\"): url {problem}", ProblemsOf(Manifest(File("a.bin", url: url))));

    [Fact]
    public void EveryProblemIsReportedOnItsOwnLine()
    {
        var e = Assert.Throws<ManifestException>(() => ManifestLoader.Parse(Manifest(File("/abs", size: -1) + "," + File("ok.bin", sha: "zz"))));
        Assert.Equal(3, e.Problems.Count);
        Assert.Contains("3 problems", e.Message);
    }
}
