using System.Diagnostics;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>A real mount of a file system in a fresh temp dir; unmounted (lazily if needed) and removed on dispose.</summary>
public sealed class TestMount : IDisposable
{
    public TestMount(IFuseFileSystem fs, Func<FuseMountOptions, FuseMountOptions>? configure = null)
    {
        MountPoint = Directory.CreateTempSubdirectory("mlfs-fuse-test-").FullName;
        var options = new FuseMountOptions { MountPoint = MountPoint, FsName = "mlfs-test", Subtype = "mlfs" };
        Session = FuseSession.Mount(fs, configure?.Invoke(options) ?? options);
    }

    public string MountPoint { get; }
    public FuseSession Session { get; }

    public string this[string relative] => Path.Combine(MountPoint, relative);

    public void Dispose()
    {
        Session.Dispose();
        if (FuseMounter.IsMountPoint(MountPoint)) FuseMounter.TryUnmount(MountPoint, lazy: true);
        try { Directory.Delete(MountPoint); } catch (IOException) { }
    }

    /// <summary>Runs a command; returns exit code and stdout.</summary>
    public static (int Code, string Output, string Error) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(120_000))
        {
            p.Kill(true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish");
        }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
