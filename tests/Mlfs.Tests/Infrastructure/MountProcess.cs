using System.Diagnostics;

namespace Mlfs.Tests.Infrastructure;

/// <summary>
/// `mlfs mount` as a separate process, the way a service runs it (output to files). Killed with
/// SIGKILL on dispose if the test did not stop it.
/// </summary>
public sealed class MountProcess : IAsyncDisposable
{
    private readonly string _stdoutFile, _stderrFile;

    private MountProcess(Process process, string stdoutFile, string stderrFile)
    {
        Process = process;
        _stdoutFile = stdoutFile;
        _stderrFile = stderrFile;
    }

    public Process Process { get; }
    public string Stdout => File.Exists(_stdoutFile) ? File.ReadAllText(_stdoutFile) : "";
    public string Stderr => File.Exists(_stderrFile) ? File.ReadAllText(_stderrFile) : "";

    /// <summary>Starts it and (unless told not to) waits for its --ready-file; <paramref name="workDir"/> holds the ready and output files.</summary>
    public static Task<MountProcess> StartAsync(string workDir, string manifest, string mountPoint, string cacheDir,
        Dictionary<string, string?> env, bool waitReady = true, params string[] extra) =>
        StartAsync(workDir, manifest, mountPoint, cacheDir, env, null, waitReady, extra);

    /// <summary>As above, with the --ready-file path chosen by the test.</summary>
    public static Task<MountProcess> StartAsync(string workDir, string manifest, string mountPoint, string cacheDir,
        Dictionary<string, string?> env, string? readyFile, bool waitReady = true, params string[] extra) =>
        StartAsync([], workDir, manifest, mountPoint, cacheDir, env, readyFile, waitReady, extra);

    /// <summary>As above, run under <paramref name="launcher"/> (e.g. nsenter into a node's network namespace).</summary>
    public static async Task<MountProcess> StartAsync(string[] launcher, string workDir, string manifest, string mountPoint, string cacheDir,
        Dictionary<string, string?> env, string? readyFile, bool waitReady = true, params string[] extra)
    {
        string ready = readyFile ?? Path.Combine(workDir, $"ready-{Guid.NewGuid():N}");
        string outputs = Path.Combine(workDir, $"mount-{Guid.NewGuid():N}");
        string stdout = outputs + ".out", stderr = outputs + ".err";
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
        string args = string.Join(' ', launcher.Concat([Repo.Mlfs, "mount", "--manifest", manifest, "--cache-dir", cacheDir, "--ready-file", ready, "--log-level", "debug"])
            .Concat(extra).Append(mountPoint).Select(a => $"'{a}'"));
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"exec {args} >'{stdout}' 2>'{stderr}'");
        psi.Environment["DOTNET_EnableDiagnostics"] = "0"; // SIGKILL would leave its debugger pipes in /tmp
        foreach (var (k, v) in env) psi.Environment[k] = v;
        var mount = new MountProcess(Process.Start(psi)!, stdout, stderr);
        if (!waitReady) return mount;
        var sw = Stopwatch.StartNew();
        while (!File.Exists(ready) || (File.ResolveLinkTarget(ready, false) is not null))
        {
            if (mount.Process.HasExited) throw new InvalidOperationException($"mlfs mount exited with {mount.Process.ExitCode}:\n{mount.Stderr}");
            if (sw.Elapsed > TimeSpan.FromMinutes(2)) throw new TimeoutException("mlfs mount did not become ready:\n" + mount.Stderr);
            await Task.Delay(20);
        }
        return mount;
    }

    /// <summary>Peak resident memory of the daemon so far (VmHWM), in bytes.</summary>
    public long PeakRss()
    {
        foreach (var line in File.ReadLines($"/proc/{Process.Id}/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
        return 0;
    }

    public async ValueTask DisposeAsync()
    {
        if (!Process.HasExited)
        {
            Process.Kill();
            await Process.WaitForExitAsync();
        }
        Process.Dispose();
    }
}
