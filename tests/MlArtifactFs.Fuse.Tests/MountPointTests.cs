namespace MlArtifactFs.Fuse.Tests;

/// <summary>
/// What may be mounted on: an empty directory, including one that is itself a bind mount with shared
/// propagation (a container's `-v /mnt/model:/mnt/model:rshared`, a Kubernetes hostPath with
/// Bidirectional propagation). Refused: a FUSE mount sitting there, and a non-empty directory.
/// </summary>
public sealed class MountPointTests : IDisposable
{
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-mountpoint-");
    private readonly List<string> _binds = [];
    private readonly InMemoryFileSystem _fs = new();
    private readonly byte[] _content = TestContent.Range(3, 0, 100_000);

    public MountPointTests() => _fs.AddFile("model.bin", _content);

    public void Dispose()
    {
        // Every mount stacked on a target goes (a propagated copy may sit on top of the bind itself).
        foreach (var bind in Enumerable.Reverse(_binds))
            for (int i = 0; i < 5 && FuseMounter.IsMountPoint(bind); i++) TestMount.Run("umount", "-l", bind);
        _work.Delete(recursive: true);
    }

    private string NewDir(string name) => _work.CreateSubdirectory(name).FullName;

    private void Bind(string source, string target, params string[] extra)
    {
        var (code, _, error) = TestMount.Run("mount", ["--bind", .. extra, source, target]);
        Assert.True(code == 0, error);
        _binds.Add(target);
    }

    private FuseSession MountAt(string mountPoint) =>
        FuseSession.Mount(_fs, new FuseMountOptions { MountPoint = mountPoint, FsName = "mlfs-test", Subtype = "mlfs" });

    [Fact]
    public void AnEmptyBindMountedDirectoryCanBeMountedOn()
    {
        string source = NewDir("host"), target = NewDir("container");
        Bind(source, target);
        Assert.True(FuseMounter.IsMountPoint(target));
        using var session = MountAt(target);
        Assert.Equal(_content, File.ReadAllBytes(Path.Combine(target, "model.bin")));
    }

    [Fact]
    public void AMountOnASharedBindIsSeenThroughItsPeerAsTheHostWouldSeeIt()
    {
        // X is made a shared mount (as Docker/podman do for ":rshared"); Y is its peer (the host's view).
        string x = NewDir("x"), y = NewDir("y");
        Bind(x, x);
        Assert.Equal(0, TestMount.Run("mount", "--make-shared", x).Code);
        Bind(x, y);
        using (var session = MountAt(x))
            Assert.Equal(_content, File.ReadAllBytes(Path.Combine(y, "model.bin")));
        Assert.False(File.Exists(Path.Combine(y, "model.bin")), "the unmount propagated to the peer");
    }

    [Fact]
    public void ANonEmptyDirectoryIsRefusedWithAClearMessage()
    {
        string dir = NewDir("full");
        File.WriteAllText(Path.Combine(dir, "keep.txt"), "x");
        var error = Assert.Throws<FuseMountException>(() => MountAt(dir));
        Assert.Contains("is not empty", error.Message);
        Assert.True(File.Exists(Path.Combine(dir, "keep.txt")));
    }

    [Fact]
    public void AFuseMountSittingThereIsRefusedAsBusy()
    {
        using var first = new TestMount(_fs);
        var error = Assert.Throws<FuseMountException>(() => MountAt(first.MountPoint));
        Assert.Contains("is busy: a FUSE file system", error.Message);
        Assert.Equal(_content, File.ReadAllBytes(first["model.bin"])); // the first mount is untouched
    }
}
