using MlArtifactFs.Manifest;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Tests;

public class FileTreeTests
{
    private static readonly S3Settings Anonymous = new(null, "us-east-1", null);

    private static string Hex(int i) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i)));

    [Fact]
    public void ChildrenAreListedInNameOrderWhateverTheManifestsOrder()
    {
        var manifest = ManifestLoader.Parse($$"""
            {"artifact_id": "t", "version": "v1", "files": [
              {"path": "b/z.bin", "url": "https://h.example/m/b/z.bin", "size": 1, "sha256": "{{Hex(1)}}"},
              {"path": "a.bin", "url": "https://h.example/m/a.bin", "size": 2, "sha256": "{{Hex(2)}}"},
              {"path": "b/a.bin", "url": "https://h.example/m/b/a.bin", "size": 3, "sha256": "{{Hex(3)}}"},
              {"path": "B.bin", "url": "https://h.example/m/B.bin", "size": 4, "sha256": "{{Hex(4)}}"}
            ]}
            """);
        var tree = FileTree.Build(manifest, Anonymous, 2);
        Assert.Equal(["B.bin", "a.bin", "b"], tree.Root.Children.Select(c => c.Name));
        Assert.Equal(["a.bin", "z.bin"], tree.FindPath("b")!.Children.Select(c => c.Name));
        Assert.Equal(3, tree.FindPath("b/a.bin")!.File!.Size);
    }

    [Fact]
    public void EveryFileKeepsItsOwnUrlWhetherOrNotItFollowsTheSharedPrefix()
    {
        var manifest = ManifestLoader.Parse($$"""
            {"artifact_id": "t", "version": "v1", "files": [
              {"path": "a.bin", "url": "s3://models/m/a.bin", "size": 1, "sha256": "{{Hex(1)}}"},
              {"path": "d/b.bin", "url": "s3://models/m/d/b.bin", "size": 1, "sha256": "{{Hex(2)}}"},
              {"path": "c.bin", "url": "s3://models/blobs/{{Hex(3)}}", "size": 1, "sha256": "{{Hex(3)}}"},
              {"path": "e.bin", "url": "s3://other/m/e.bin", "size": 1, "sha256": "{{Hex(4)}}"},
              {"path": "f.bin", "url": "https://h.example/x/f.bin?X-Amz-Signature=abc", "size": 1, "sha256": "{{Hex(5)}}"}
            ]}
            """);
        var tree = FileTree.Build(manifest, Anonymous, 2);
        Assert.Equal("s3://models/m/a.bin", tree.FindPath("a.bin")!.File!.Url);
        Assert.Equal("s3://models/m/d/b.bin", tree.FindPath("d/b.bin")!.File!.Url);
        Assert.Equal($"s3://models/blobs/{Hex(3)}", tree.FindPath("c.bin")!.File!.Url);
        Assert.Equal("s3://other/m/e.bin", tree.FindPath("e.bin")!.File!.Url);
        Assert.Equal("https://h.example/x/f.bin?X-Amz-Signature=abc", tree.FindPath("f.bin")!.File!.Url);
        Assert.Equal("/m/d/b.bin", tree.FindPath("d/b.bin")!.File!.Location.RequestUri.AbsolutePath);
    }
}
