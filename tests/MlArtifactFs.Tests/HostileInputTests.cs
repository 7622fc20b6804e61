using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;
using MlArtifactFs.Fuse;
using MlArtifactFs.Manifest;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Tests;

/// <summary>
/// Manifests, cache files and names as input: refused with a message that names the problem and the
/// entry, never followed, truncated or trusted. No test here sends a byte anywhere.
/// </summary>
public sealed class HostileInputTests : IDisposable
{
    private const string Sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("mlfs-hostile-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static string Manifest(string id = "m", string version = "v1", string url = "s3://b/k", long size = 10, string? chunkSize = null) => $$"""
        { "artifact_id": {{System.Text.Json.JsonSerializer.Serialize(id)}}, "version": {{System.Text.Json.JsonSerializer.Serialize(version)}}{{(chunkSize is null ? "" : $", \"chunk_size\": {chunkSize}")}},
          "files": [ { "path": "w.bin", "url": {{System.Text.Json.JsonSerializer.Serialize(url)}}, "size": {{size}}, "sha256": "{{Sha}}" } ] }
        """;

    private static string Refusal(string json) => string.Join("\n", Assert.Throws<ManifestException>(() => ManifestLoader.Parse(json)).Problems);

    [Theory]
    [InlineData("model\nmlfs: ready: forged", "artifact_id")]
    [InlineData("bert\u001b[31m", "artifact_id")]
    public void ControlCharactersInNamesAreRefused(string id, string field)
    {
        Assert.Contains(field, Refusal(Manifest(id: id)));
        Assert.Contains("control character", Refusal(Manifest(version: id)));
    }

    [Theory]
    [InlineData("http://169.254.169.254/latest/meta-data/iam/security-credentials/")]
    [InlineData("http://169.254.0.1:8080/x")]
    [InlineData("http://[fe80::1]/x")]
    [InlineData("http://[fd00:ec2::254]/latest/")]
    [InlineData("http://[::ffff:169.254.169.254]/x")]
    [InlineData("https://2852039166/x")] // 169.254.169.254 as one number
    public void LinkLocalAndMetadataHostsAreRefusedAtLoad(string url)
    {
        string problems = Refusal(Manifest(url: url));
        Assert.Contains("files[0] (\"w.bin\")", problems);
        Assert.Contains("refused", problems);
    }

    [Theory]
    [InlineData("http://127.0.0.1:9000/models/w.bin")]
    [InlineData("http://10.0.0.5:9000/models/w.bin")]
    [InlineData("http://192.168.1.20/models/w.bin")]
    [InlineData("http://minio.internal:9000/models/w.bin")]
    public void LoopbackPrivateAndNamedHostsStayAllowed(string url) => ManifestLoader.Parse(Manifest(url: url));

    [Fact]
    public void CredentialsInAUrlAreRefused()
    {
        string problems = Refusal(Manifest(url: "https://user:hunter2@example.com/w.bin"));
        Assert.Contains("must not carry credentials", problems);
        Assert.DoesNotContain("hunter2", problems);
    }

    [Fact]
    public void AnUnparsableUrlIsNamedWithoutItsQueryString()
    {
        string problems = Refusal(Manifest(url: "not a url?X-Amz-Signature=deadbeefcafe&X-Amz-Credential=AKIAEXAMPLE"));
        Assert.Contains("is not an absolute URL", problems);
        Assert.DoesNotContain("deadbeefcafe", problems);
        Assert.DoesNotContain("AKIAEXAMPLE", problems);
    }

    [Fact]
    public void ChunkSizeAboveTheBoundIsRefusedByName()
    {
        string problems = Refusal(Manifest(chunkSize: (65L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.Contains("chunk_size", problems);
        Assert.Contains("64 MiB", problems);
        ManifestLoader.Parse(Manifest(chunkSize: (64L << 20).ToString(System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Theory]
    [InlineData(1L << 56)]        // a seed-format file that once got 0 chunks and was served as zeros
    [InlineData(long.MaxValue)]
    public void SizesThatWouldOverflowAreRefused(long size) =>
        Assert.Contains("files[0] (\"w.bin\"): size", Refusal(Manifest(size: size)));

    [Fact]
    public void TooManyChunksForOneFileIsRefused() =>
        Assert.Contains("more than", Refusal(Manifest(size: 1L << 40, chunkSize: "4096")));

    [Fact]
    public void HostPolicyChecksResolvedAddressesToo()
    {
        Assert.NotNull(HostPolicy.Refuses(IPAddress.Parse("169.254.169.254")));
        Assert.NotNull(HostPolicy.Refuses(IPAddress.Parse("fe80::abcd")));
        Assert.Null(HostPolicy.Refuses(IPAddress.Loopback));
        Assert.Null(HostPolicy.Refuses(IPAddress.Parse("10.1.2.3")));
    }

    [Theory]
    [InlineData("mlfs:bert,allow_other", "mlfs:bert_allow_other")]
    [InlineData("mlfs:a=b c\nd", "mlfs:a_b_c_d")]
    public void MountOptionValuesCannotInjectOptions(string name, string expected) => Assert.Equal(expected, FuseMounter.OptionValue(name));

    // ---- cache paths ----------------------------------------------------------------------------

    private static BlobDescriptor Chunked(long size, long chunkSize = 4096)
    {
        var chunks = Enumerable.Range(0, (int)((size + chunkSize - 1) / chunkSize)).Select(i => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i)))).ToList();
        return new BlobDescriptor(Sha, size, chunkSize, chunks);
    }

    private string BlobPath(BlobDescriptor d, string extension) => Path.Combine(_dir.FullName, "blobs", d.Name.Substring(2, 2), d.Name + extension);

    [Fact]
    public void APlantedSymlinkInTheCacheIsRefusedAndItsTargetUntouched()
    {
        using (var cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance)) { } // creates the layout
        var d = Chunked(10_000);
        string victim = Path.Combine(_dir.FullName, "victim");
        File.WriteAllText(victim, "precious");
        Directory.CreateDirectory(Path.GetDirectoryName(BlobPath(d, ".data"))!);
        File.CreateSymbolicLink(BlobPath(d, ".data"), victim);
        using var reopened = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);
        var error = Assert.ThrowsAny<IOException>(() => reopened.Open(d));
        Assert.Contains(d.Name + ".data", error.Message);
        Assert.Contains("symbolic link", error.Message);
        Assert.Equal("precious", File.ReadAllText(victim));
    }

    [Fact]
    public void ACacheDirectoryOfAnotherUserIsRefusedAndNotChmodded()
    {
        string root = Path.Combine(_dir.FullName, "theirs");
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(root, (UnixFileMode)0x1FF); // 0777
        Assert.Equal(0, Chown(root, 65534));
        var error = Assert.Throws<UnsafeCachePathException>(() => new BlobCache(root, 1L << 30, NullLogger.Instance));
        Assert.Contains(root, error.Message);
        Assert.Contains("uid 65534", error.Message);
        Assert.Equal((UnixFileMode)0x1FF, File.GetUnixFileMode(root));
    }

    /// <summary>A directory others may write (like /tmp, or a fresh tmpfs) is refused, and its mode left alone, even when it is ours.</summary>
    [Fact]
    public void AWorldWritableDirectoryIsRefusedAndNeverChmodded()
    {
        string shared = Path.Combine(_dir.FullName, "sticky");
        Directory.CreateDirectory(shared);
        File.SetUnixFileMode(shared, (UnixFileMode)0x3FF); // 1777, as /tmp
        var error = Assert.Throws<UnsafeCachePathException>(() => CacheFiles.EnsurePrivateDirectory(shared));
        Assert.Contains("writable by group or others", error.Message);
        Assert.Equal((UnixFileMode)0x3FF, File.GetUnixFileMode(shared));
        Assert.Throws<UnsafeCachePathException>(() => new BlobCache(shared, 1L << 30, NullLogger.Instance));
        Assert.Equal((UnixFileMode)0x3FF, File.GetUnixFileMode(shared));
    }

    [Fact]
    public void ACacheFileOfAnotherUserIsRefused()
    {
        using (var cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance))
        {
            var blob = cache.Open(Chunked(10_000));
            cache.Release(blob);
        }
        var d = Chunked(10_000);
        Assert.Equal(0, Chown(BlobPath(d, ".rec"), 65534));
        using var reopened = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);
        var error = Assert.ThrowsAny<IOException>(() => reopened.Open(d));
        Assert.Contains("uid 65534", error.Message);
    }

    [Fact]
    public void ABlobOfTheWrongSizeIsSetAsideNotTruncatedUnderItsReaders()
    {
        var d = Chunked(10_000);
        using (var cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance)) cache.Release(cache.Open(d));
        string data = BlobPath(d, ".data");
        File.WriteAllBytes(data, new byte[777]); // wrong size: damaged, or written by someone else
        File.SetUnixFileMode(data, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using var other = File.OpenHandle(data); // another process reading the old file
        using var reopened = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);
        var blob = reopened.Open(d);
        Assert.Equal(777, RandomAccess.GetLength(other)); // its file was not truncated under it
        Assert.Equal(10_000, new FileInfo(data).Length);  // the blob starts afresh in a new file
        Assert.Equal(0, blob.ServableChunks);
        reopened.Release(blob);
    }

    [Fact]
    public void IndexEntriesNamingNothingOfOursAreRefusedAndCounted()
    {
        using var cache = new BlobCache(_dir.FullName, 1L << 30, NullLogger.Instance);
        var buffer = new byte[4096];
        Assert.False(cache.TryReadIndexedChunk("../../../etc/passwd", 0, buffer));
        Assert.False(cache.TryReadIndexedChunk("c-" + new string('a', 64), -5, buffer));
        Assert.False(cache.TryReadIndexedChunk(Sha, 0, buffer)); // an earlier format's name
        Assert.Equal(3, cache.IgnoredIndexEntries);
    }

    /// <summary>Gives a path to another user (nobody), as a hostile local user would have made it.</summary>
    private static int Chown(string path, uint uid)
    {
        using var chown = System.Diagnostics.Process.Start("chown", ["-h", $"{uid}:{uid}", path])!;
        chown.WaitForExit();
        return chown.ExitCode;
    }
}
