using System.Runtime.InteropServices;
using System.Text.Json;
using MlArtifactFs.Fuse;

namespace Mlfs.Tests.Infrastructure;

/// <summary>
/// Tests that run `mlfs mount` processes: a private work directory (mount points, ready and output files, the
/// cache) and a model folder, both removed afterwards, after any mount left in them is detached.
/// </summary>
public abstract class MountProcessTestBase(string prefix) : IDisposable
{
    protected readonly DirectoryInfo _work = Directory.CreateTempSubdirectory(prefix);
    protected readonly TestModel _model = new();

    protected string Cache => Path.Combine(_work.FullName, "cache");
    protected string NewMountPoint() => _work.CreateSubdirectory("mnt-" + Guid.NewGuid().ToString("N")[..8]).FullName;

    public void Dispose()
    {
        _model.Dispose();
        foreach (var dir in _work.EnumerateDirectories())
            if (FuseMounter.IsMountPoint(dir.FullName)) FuseMounter.TryUnmount(dir.FullName, lazy: true);
        _work.Delete(recursive: true);
        GC.SuppressFinalize(this);
    }

    /// <summary>`mlfs status --json` of a running mount.</summary>
    protected static async Task<JsonElement> StatusAsync(string mountPoint)
    {
        var result = await Repo.RunAsync(Repo.Mlfs, ["status", "--json", mountPoint]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        return JsonDocument.Parse(result.Stdout).RootElement;
    }

    /// <summary>Drops the kernel's page cache of a file on a mount, so the next read reaches the daemon.</summary>
    public static void DropPageCache(string path)
    {
        using var handle = File.OpenHandle(path);
        Assert.Equal(0, posix_fadvise(handle.DangerousGetHandle().ToInt32(), 0, 0, 4 /* POSIX_FADV_DONTNEED */));
    }

    [DllImport("libc")]
    private static extern int posix_fadvise(int fd, long offset, long length, int advice);
}
