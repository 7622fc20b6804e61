using System.Diagnostics;

/// <summary>
/// Containers or local processes for the dev stack. A container resource whose image cannot be had does
/// not fail in Aspire: it waits forever, and so does everything that waits for it. So containers are
/// chosen only when an engine answers *and* every image is present or pulls within a bound; otherwise
/// the stack runs local processes, and says why. MLFS_DEV_CONTAINERS=1/0 forces either.
/// </summary>
internal static class ContainerProbe
{
    public const string MinioImage = "docker.io/minio/minio", MinioTag = "latest";
    public const string RedisImage = "docker.io/library/redis", RedisTag = "7.4";
    public static readonly string[] Images = [$"{MinioImage}:{MinioTag}", $"{RedisImage}:{RedisTag}"];

    /// <summary>How long one image may take to pull before the stack gives up on containers.</summary>
    public static readonly TimeSpan PullBound = TimeSpan.FromSeconds(60);

    /// <summary>Runs a command with a time bound; true when it exited 0 in time.</summary>
    public delegate bool Runner(string file, string[] args, TimeSpan bound);

    public static (bool UseContainers, string Why) Decide(Runner run)
    {
        if (Environment.GetEnvironmentVariable("MLFS_DEV_CONTAINERS") is { } forced)
            return (forced == "1", $"MLFS_DEV_CONTAINERS={forced}");
        foreach (var engine in new[] { "docker", "podman" })
        {
            if (!run(engine, ["info"], TimeSpan.FromSeconds(5))) continue;
            foreach (var image in Images)
            {
                if (run(engine, ["image", "inspect", image], TimeSpan.FromSeconds(10))) continue;
                if (!run(engine, ["pull", image], PullBound))
                    return (false, $"{engine} answers, but {image} is not present and could not be pulled within {PullBound.TotalSeconds:0} s");
            }
            return (true, $"{engine}, images present");
        }
        return (false, "no container engine answers");
    }

    public static bool RunProcess(string file, string[] args, TimeSpan bound)
    {
        try
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
            foreach (var a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi);
            if (p is null) return false;
            _ = p.StandardOutput.ReadToEndAsync();
            _ = p.StandardError.ReadToEndAsync();
            if (p.WaitForExit(bound)) return p.ExitCode == 0;
            p.Kill(entireProcessTree: true);
            return false;
        }
        catch (System.ComponentModel.Win32Exception) { return false; } // not installed
    }
}
