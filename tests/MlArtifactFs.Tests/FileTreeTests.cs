using MlArtifactFs.Manifest;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Tests;

public class FileTreeTests
{
    private static readonly S3Settings Anonymous = new(null, "us-east-1", null);

    private static string Hex(int i) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(BitConverter.GetBytes(i)));

    /// <summary>The tree of a manifest listing these files in this order (file i has size i + 1).</summary>
    private static FileTree Tree(params (string Path, string Url)[] files)
    {
        string entries = string.Join(",\n", files.Select((f, i) =>
            $$"""{"path": "{{f.Path}}", "url": "{{f.Url}}", "size": {{i + 1}}, "sha256": "{{Hex(i)}}"}"""));
        return FileTree.Build(ManifestLoader.Parse($$"""{"artifact_id": "t", "version": "v1", "files": [{{entries}}]}"""), Anonymous, 2);
    }

    [Fact]
    public void ChildrenAreListedInNameOrderWhateverTheManifestsOrder()
    {
        var tree = Tree(("b/z.bin", "https://h.example/m/b/z.bin"), ("a.bin", "https://h.example/m/a.bin"),
            ("b/a.bin", "https://h.example/m/b/a.bin"), ("B.bin", "https://h.example/m/B.bin"));
        Assert.Equal(["B.bin", "a.bin", "b"], tree.Root.Children.Select(c => c.Name));
        Assert.Equal(["a.bin", "z.bin"], tree.FindPath("b")!.Children.Select(c => c.Name));
        Assert.Equal(3, tree.FindPath("b/a.bin")!.File!.Size); // the third file of the manifest
    }

    [Fact]
    public void EveryFileKeepsItsOwnUrlWhetherOrNotItFollowsTheSharedPrefix()
    {
        var tree = Tree(("a.bin", "s3://models/m/a.bin"), ("d/b.bin", "s3://models/m/d/b.bin"), ("c.bin", $"s3://models/blobs/{Hex(3)}"),
            ("e.bin", "s3://other/m/e.bin"), ("f.bin", "https://h.example/x/f.bin?X-Amz-Signature=abc"));
        Assert.Equal("s3://models/m/a.bin", tree.FindPath("a.bin")!.File!.Url);
        Assert.Equal("s3://models/m/d/b.bin", tree.FindPath("d/b.bin")!.File!.Url);
        Assert.Equal($"s3://models/blobs/{Hex(3)}", tree.FindPath("c.bin")!.File!.Url);
        Assert.Equal("s3://other/m/e.bin", tree.FindPath("e.bin")!.File!.Url);
        Assert.Equal("https://h.example/x/f.bin?X-Amz-Signature=abc", tree.FindPath("f.bin")!.File!.Url);
        Assert.Equal("/m/d/b.bin", tree.FindPath("d/b.bin")!.File!.Location.RequestUri.AbsolutePath);
    }
}
