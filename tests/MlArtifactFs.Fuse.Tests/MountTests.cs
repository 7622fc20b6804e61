using System.Security.Cryptography;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>The FUSE layer on a real kernel mount, with an in-memory tree (needs root and /dev/fuse).</summary>
public sealed class MountTests : IDisposable
{
    private const long FourGiB = 4L << 30;
    private const ulong BigSeed = 42, MediumSeed = 7;
    private readonly InMemoryFileSystem _fs = new();
    private readonly TestMount _mount;

    public MountTests()
    {
        _fs.AddFile("config.json", "{\"hidden_size\": 768}"u8.ToArray());
        _fs.AddFile("empty.bin", []);
        _fs.AddFile("a/b/c/deep.txt", "deep"u8.ToArray());
        _fs.AddFile("names/with space.txt", "space"u8.ToArray());
        _fs.AddFile("names/ünïcödé-模型.json", "utf8"u8.ToArray());
        _fs.AddComputedFile("big/4gib.bin", FourGiB, BigSeed);
        _fs.AddComputedFile("medium.bin", 64L << 20, MediumSeed);
        for (int i = 0; i < 10_000; i++) _fs.AddFile($"many/file-{i:D5}", BitConverter.GetBytes(i));
        _mount = new TestMount(_fs);
    }

    public void Dispose() => _mount.Dispose();

    [Fact]
    public void MountShowsInProcMountsAsReadOnlyFuseMlfs()
    {
        var line = File.ReadAllLines("/proc/mounts").Single(l => l.Split(' ')[1] == _mount.MountPoint);
        var fields = line.Split(' ');
        Assert.Equal("mlfs-test", fields[0]);
        Assert.Equal("fuse.mlfs", fields[2]);
        var options = fields[3].Split(',');
        Assert.Contains("ro", options);
        Assert.Contains("nosuid", options);
        Assert.Contains("nodev", options);
        Assert.Contains("default_permissions", options);
        Assert.DoesNotContain("allow_other", options);
    }

    [Fact]
    public void OtherUsersAreKeptOutUnlessAllowOtherIsAsked()
    {
        string[] asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", "cat"];
        var denied = TestMount.Run("setpriv", [.. asNobody, _mount["names/with space.txt"]]);
        Assert.NotEqual(0, denied.Code);
        Assert.Contains("Permission denied", denied.Error);

        var fs = new InMemoryFileSystem();
        fs.AddFile("shared.txt", "for everyone"u8.ToArray());
        using var open = new TestMount(fs, o => o with { AllowOther = true });
        Assert.Contains("allow_other", File.ReadAllLines("/proc/mounts").Single(l => l.Split(' ')[1] == open.MountPoint).Split(' ')[3].Split(','));
        var allowed = TestMount.Run("setpriv", [.. asNobody, open["shared.txt"]]);
        Assert.True(allowed.Code == 0, allowed.Error);
        Assert.Equal("for everyone", allowed.Output);
    }

    [Fact]
    public void ListsNestedDirectoriesLikeLsR()
    {
        var (code, output, _) = TestMount.Run("ls", "-R", _mount.MountPoint);
        Assert.Equal(0, code);
        Assert.Contains("deep.txt", output);
        Assert.Contains("with space.txt", output);
        Assert.Contains("ünïcödé-模型.json", output);
        var all = Directory.EnumerateFileSystemEntries(_mount.MountPoint, "*", SearchOption.AllDirectories)
            .Where(p => !p.Contains("/many/", StringComparison.Ordinal)).Select(p => Path.GetRelativePath(_mount.MountPoint, p)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(["a", "a/b", "a/b/c", "a/b/c/deep.txt", "big", "big/4gib.bin", "config.json", "empty.bin", "many", "medium.bin",
            "names", "names/with space.txt", "names/ünïcödé-模型.json"], all);
    }

    [Fact]
    public void TenThousandEntriesInOneDirectory()
    {
        var names = Directory.GetFiles(_mount["many"]).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(10_000, names.Count);
        Assert.Equal(Enumerable.Range(0, 10_000).Select(i => $"file-{i:D5}"), names);
        Assert.Equal(BitConverter.GetBytes(9_999), File.ReadAllBytes(_mount["many/file-09999"]));
    }

    [Fact]
    public void StatReportsSizeModeAndType()
    {
        Assert.Equal(0, Libc.Stat(_mount["big/4gib.bin"], out var st));
        Assert.Equal(FourGiB, st.Size);
        Assert.True(st.IsRegularFile);
        Assert.Equal(0x124u, st.Mode & 0xFFF); // r--r--r--
        Assert.Equal(0, Libc.Stat(_mount["a/b"], out var dir));
        Assert.True(dir.IsDirectory);
        Assert.Equal(0, Libc.Stat(_mount["empty.bin"], out var empty));
        Assert.Equal(0, empty.Size);
        Assert.Equal(-1, Libc.Stat(_mount["missing"], out _));
        Assert.Equal(Libc.ENOENT, Libc.LastErrno);
    }

    [Fact]
    public void SmallFilesReadExactly()
    {
        Assert.Equal("{\"hidden_size\": 768}", File.ReadAllText(_mount["config.json"]));
        Assert.Empty(File.ReadAllBytes(_mount["empty.bin"]));
        Assert.Equal("deep", File.ReadAllText(_mount["a/b/c/deep.txt"]));
        Assert.Equal("space", File.ReadAllText(_mount["names/with space.txt"]));
        Assert.Equal("utf8", File.ReadAllText(_mount["names/ünïcödé-模型.json"]));
        var (code, output, _) = TestMount.Run("cat", _mount["config.json"]);
        Assert.Equal(0, code);
        Assert.Equal("{\"hidden_size\": 768}", output);
    }

    [Fact]
    public void PreadAtOddOffsetsAndAcrossMebibyteBoundariesOfA4GiBFile()
    {
        using var handle = File.OpenHandle(_mount["big/4gib.bin"]);
        long[] offsets = [0, 1, (1 << 20) - 1, (1 << 20) - 3, 3L << 20, (2L << 30) - 7, (4L << 30) - 4096 - 13, FourGiB - 1];
        int[] sizes = [1, 4095, 4096, 65537, (1 << 20) + 1, 3 << 20];
        var random = new Random(1234);
        foreach (long offset in offsets)
        {
            int size = sizes[random.Next(sizes.Length)];
            int expected = (int)Math.Min(size, FourGiB - offset);
            var buffer = new byte[size];
            int total = 0;
            while (total < expected)
            {
                int n = RandomAccess.Read(handle, buffer.AsSpan(total, expected - total), offset + total);
                Assert.True(n > 0, $"short read at {offset + total}");
                total += n;
            }
            Assert.Equal(TestContent.Range(BigSeed, offset, expected), buffer[..expected]);
        }
        Assert.Equal(0, RandomAccess.Read(handle, new byte[10], FourGiB)); // EOF
    }

    [Fact]
    public void DdOfAMebibyteRangeHashesAsExpected()
    {
        // 8 MiB starting at 4 GiB - 8 MiB: exercises offsets above 2^32.
        var (code, output, error) = TestMount.Run("sh", "-c", $"dd if='{_mount["big/4gib.bin"]}' bs=1M skip=4088 count=8 status=none | sha256sum");
        Assert.True(code == 0, error);
        string expected = Convert.ToHexStringLower(SHA256.HashData(TestContent.Range(BigSeed, FourGiB - (8 << 20), 8 << 20)));
        Assert.StartsWith(expected, output);
    }

    [Fact]
    public void MmapReadsSeeTheFileContent()
    {
        // mmap from another process: a page fault on our own mount inside this process would wait for
        // the FUSE reader threads while the GC waits for the faulting thread (a daemon never maps its
        // own mount; a test must not either).
        long[] offsets = [0, 4095, 4096, (1 << 20) + 17, (64L << 20) - 1];
        string script = "import mmap,sys\nf=open(sys.argv[1],'rb')\nm=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ)\n" +
                        "print(' '.join(str(m[int(o)]) for o in sys.argv[2:]))";
        var (code, output, error) = TestMount.Run("python3", ["-c", script, _mount["medium.bin"], .. offsets.Select(o => o.ToString(System.Globalization.CultureInfo.InvariantCulture))]);
        Assert.True(code == 0, error);
        Assert.Equal(offsets.Select(o => TestContent.At(MediumSeed, o).ToString(System.Globalization.CultureInfo.InvariantCulture)), output.Trim().Split(' '));
    }

    [Fact]
    public async Task SixteenConcurrentReadersSeeEveryByte()
    {
        const long size = 64L << 20;
        var readers = Enumerable.Range(0, 16).Select(r => Task.Run(() =>
        {
            var random = new Random(r);
            using var handle = File.OpenHandle(_mount["medium.bin"]);
            var buffer = new byte[(1 << 20) + 4096];
            long offset = r % 2 == 0 ? 0 : random.NextInt64(size / 2); // half read from the start, half from a random place
            while (offset < size)
            {
                int want = (int)Math.Min(random.Next(1, buffer.Length), size - offset);
                int n = RandomAccess.Read(handle, buffer.AsSpan(0, want), offset);
                Assert.True(n > 0);
                for (int i = 0; i < n; i++)
                    if (buffer[i] != TestContent.At(MediumSeed, offset + i))
                        Assert.Fail($"reader {r}: wrong byte at {offset + i}");
                offset += n;
            }
        })).ToArray();
        await Task.WhenAll(readers);
    }

    [Fact]
    public void WritesAreRefusedWithEROFS()
    {
        string file = _mount["config.json"];
        Assert.Equal(-1, Sys.Open(_mount["new.txt"], Sys.O_CREAT | Sys.O_WRONLY, 0x1A4));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Open(file, Sys.O_WRONLY, 0));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Open(file, Sys.O_RDWR | Sys.O_TRUNC, 0));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Truncate(file, 0));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Unlink(file));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Rename(file, _mount["renamed.json"]));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.MkDir(_mount["newdir"], 0x1ED));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.RmDir(_mount["a/b/c"]));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Chmod(file, 0x1FF));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.Symlink("config.json", _mount["link"]));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal(-1, Sys.SetXattr(file, "user.test", [1], 1, 0));
        Assert.Equal(Libc.EROFS, Sys.Errno);
        Assert.Equal("{\"hidden_size\": 768}", File.ReadAllText(file)); // nothing changed
    }

    [Fact]
    public void StatFsAnswers()
    {
        var (code, output, _) = TestMount.Run("stat", "-f", "-c", "%S %l", _mount.MountPoint); // block size, max name length
        Assert.Equal(0, code);
        Assert.Equal("4096 255", output.Trim());
        Assert.True(_mount.Session.GetOpCount(FuseOpcode.StatFs) > 0);
    }
}
