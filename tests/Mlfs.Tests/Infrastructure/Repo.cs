using System.Diagnostics;

namespace Mlfs.Tests.Infrastructure;

public static class Repo
{
    /// <summary>The repository root (where MlArtifactFs.sln is).</summary>
    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MlArtifactFs.sln"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root from " + AppContext.BaseDirectory);
    }

    /// <summary>The mlfs executable built alongside these tests (same configuration).</summary>
    public static string Mlfs { get; } = FindMlfs();

    private static string FindMlfs()
    {
        string configuration = AppContext.BaseDirectory.Contains("/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
        string path = Path.Combine(Root, "src", "Mlfs", "bin", configuration, "net10.0", "mlfs");
        if (!File.Exists(path)) throw new FileNotFoundException("build src/Mlfs first", path);
        return path;
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Sends a signal by name (TERM, INT, KILL) with kill(1); returns its exit code.</summary>
    public static int Signal(int pid, string signal)
    {
        using var p = Process.Start("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        p.WaitForExit();
        return p.ExitCode;
    }

    /// <summary>Runs a program to completion (bounded), capturing its output.</summary>
    public static async Task<Result> RunAsync(string file, IEnumerable<string> args, IDictionary<string, string?>? env = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_EnableDiagnostics"] = "0"; // no debugger pipes left in /tmp by a killed child
        if (env is not null) foreach (var (k, v) in env) psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(3));
        try { await p.WaitForExitAsync(cts.Token); }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', psi.ArgumentList)} did not finish");
        }
        return new Result(p.ExitCode, await stdout, await stderr);
    }
}
