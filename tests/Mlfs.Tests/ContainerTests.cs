using System.Diagnostics;
using MlArtifactFs.Fuse;
using Mlfs.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// The mount service in a container, run the way the README shows, with podman: against the local S3
/// server, the model read from the host through the propagated mount, `podman stop` unmounting cleanly,
/// a second container warm on the same cache volume, and the credentials passed only through the
/// environment (`-e AWS_SECRET_ACCESS_KEY` without a value: never on a command line), never in a log
/// of mlfs or in the container's arguments, labels or annotations.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class ContainerTests(S3Fixture s3, ITestOutputHelper output) : IAsyncLifetime
{
    private const string Image = "localhost/mlfs:test";
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-container-");
    private readonly TestModel _model = new();
    private readonly string _id = Guid.NewGuid().ToString("N")[..8];
    private readonly List<string> _containers = [];
    private string HostMount => Path.Combine(_work.FullName, "model");

    public async Task InitializeAsync()
    {
        if (FuseMounter.FindOnPath("podman") is null)
            Assert.Fail("podman is not installed: scripts/test.sh installs it (apt-get install podman runc)");
        if ((await Podman("image", "exists", Image)).ExitCode != 0)
        {
            var build = await Repo.RunAsync(Path.Combine(Repo.Root, "scripts", "container-image.sh"), [Image], PodmanEnvironment(), TimeSpan.FromMinutes(10));
            Assert.True(build.ExitCode == 0, "scripts/container-image.sh failed:\n" + build.Stderr);
        }
        // The host side of ":rshared" must itself be a shared mount (systemd makes / shared; a test makes its own).
        Directory.CreateDirectory(HostMount);
        Assert.Equal(0, (await Repo.RunAsync("mount", ["--bind", HostMount, HostMount])).ExitCode);
        Assert.Equal(0, (await Repo.RunAsync("mount", ["--make-shared", HostMount])).ExitCode);
    }

    public async Task DisposeAsync()
    {
        foreach (var name in _containers) await Podman("rm", "-f", "-t", "0", name);
        await Podman("volume", "rm", "-f", $"mlfs-test-cache-{_id}");
        for (int i = 0; i < 5 && FuseMounter.IsMountPoint(HostMount); i++) await Repo.RunAsync("umount", ["-l", HostMount]);
        _model.Dispose();
        _work.Delete(recursive: true);
    }

    private static readonly Lazy<string> ContainersConf = new(() =>
    {
        // The settings Debian 12's podman needs here (runc, no default ulimits), from the one place that has them.
        var psi = new ProcessStartInfo("bash", ["-c", "source scripts/podman-conf.sh && printf %s \"$CONTAINERS_CONF\""])
            { WorkingDirectory = Repo.Root, RedirectStandardOutput = true };
        psi.Environment.Remove("CONTAINERS_CONF");
        using var p = Process.Start(psi)!;
        string conf = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return conf;
    });

    private static Dictionary<string, string?> PodmanEnvironment() => new()
    {
        ["CONTAINERS_CONF"] = Environment.GetEnvironmentVariable("CONTAINERS_CONF") ?? ContainersConf.Value,
    };

    private Task<Repo.Result> Podman(params string[] args) => Repo.RunAsync("podman", args, PodmanEnvironment(), TimeSpan.FromMinutes(3));

    /// <summary>podman with the secret in its own environment, so `-e NAME` (no value) passes it on.</summary>
    private Task<Repo.Result> PodmanWithSecret(params string[] args)
    {
        var env = PodmanEnvironment();
        env["AWS_SECRET_ACCESS_KEY"] = s3.SecretKey;
        return Repo.RunAsync("podman", args, env, TimeSpan.FromMinutes(3));
    }

    /// <summary>Starts the mount service container the README's way; returns once its ready file appears.</summary>
    private async Task<(string Name, TimeSpan ToReady)> StartAsync(string manifest, string readyDir)
    {
        string name = $"mlfs-test-{_id}-{_containers.Count}";
        _containers.Add(name);
        var sw = Stopwatch.StartNew();
        var run = await PodmanWithSecret("run", "-d", "--name", name,
            "--cap-add", "SYS_ADMIN", "--device", "/dev/fuse", "--network", "host",
            "-e", $"AWS_ENDPOINT_URL={s3.Endpoint}", "-e", $"AWS_REGION={s3.Region}", "-e", $"AWS_ACCESS_KEY_ID={s3.AccessKey}",
            "-e", "AWS_SECRET_ACCESS_KEY",
            "-v", $"{manifest}:/manifests/model.json:ro", "-v", $"mlfs-test-cache-{_id}:/var/cache/mlfs",
            "-v", $"{HostMount}:/mnt/model:rshared", "-v", $"{readyDir}:/run/mlfs-ready",
            Image, "mount", "--manifest", "/manifests/model.json", "--ready-file", "/run/mlfs-ready/ready", "/mnt/model");
        Assert.True(run.ExitCode == 0, "podman run failed:\n" + run.Stderr);
        while (!File.Exists(Path.Combine(readyDir, "ready")))
        {
            var state = await Podman("inspect", "-f", "{{.State.Running}}", name);
            if (state.Stdout.Trim() != "true")
                Assert.Fail($"the container stopped before it was ready:\n{(await Podman("logs", name)).Stderr}");
            if (sw.Elapsed > TimeSpan.FromMinutes(2)) Assert.Fail($"not ready after 2 minutes:\n{(await Podman("logs", name)).Stderr}");
            await Task.Delay(50);
        }
        return (name, sw.Elapsed);
    }

    [Fact]
    public async Task TheMountServiceRunsInAContainerAndTheHostReadsThroughThePropagatedMount()
    {
        _model.Add("config.json", 700, 1).Add("tokenizer.json", 20_000, 2).Add("model.safetensors", 64 << 20, 3);
        string manifest = await _model.PublishAsync(s3, "container", prefetch: ["config.json", "tokenizer.json"]);

        // 1. Cold: every byte read from the host through the propagated mount.
        string ready1 = _work.CreateSubdirectory("ready1").FullName;
        var (first, toReady) = await StartAsync(manifest, ready1);
        Assert.Equal("fuse.mlfs", FuseMounter.MountedTypeAt(HostMount));
        long checkedBytes = 0;
        var sw = Stopwatch.StartNew();
        foreach (var (path, bytes) in _model.Files)
        {
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(HostMount, path)), $"{path} from the host");
            checkedBytes += bytes.Length;
        }
        var coldRead = sw.Elapsed;

        // 2. podman stop: SIGTERM, mlfs unmounts, nothing dead left on the host.
        sw.Restart();
        var stop = await Podman("stop", "-t", "30", first);
        var stopTime = sw.Elapsed;
        Assert.True(stop.ExitCode == 0, stop.Stderr);
        Assert.NotEqual("fuse.mlfs", FuseMounter.MountedTypeAt(HostMount));
        Assert.True(Directory.Exists(HostMount) && !Directory.EnumerateFileSystemEntries(HostMount).Any(), "the host directory is empty and answers (no dead mount)");
        Assert.Equal("0", (await Podman("inspect", "-f", "{{.State.ExitCode}}", first)).Stdout.Trim());

        // 3. A second container on the same cache volume starts warm: nothing fetched for cached files.
        string ready2 = _work.CreateSubdirectory("ready2").FullName;
        var (second, warmToReady) = await StartAsync(manifest, ready2);
        sw.Restart();
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(HostMount, path)), $"{path} from the host, warm");
        var warmRead = sw.Elapsed;
        var status = await Podman("exec", second, "/usr/local/bin/mlfs", "status", "--json", "/mnt/model");
        Assert.True(status.ExitCode == 0, status.Stderr);
        var json = System.Text.Json.JsonDocument.Parse(status.Stdout).RootElement;
        long warmFetched = json.GetProperty("bytes_fetched").GetInt64();

        // 4. The secret reached mlfs only through its environment: not in its logs, not in the container's
        //    arguments, labels or annotations (podman itself shows environment values in `inspect`).
        string logs = (await Podman("logs", first)).Stderr + (await Podman("logs", first)).Stdout + (await Podman("logs", second)).Stderr + (await Podman("logs", second)).Stdout;
        string described = (await Podman("inspect", "-f", "{{.Path}} {{.Args}} {{.Config.Cmd}} {{.Config.Entrypoint}} {{.Config.Labels}} {{.Config.Annotations}}", first, second)).Stdout;
        string environment = (await Podman("inspect", "-f", "{{.Config.Env}}", first)).Stdout;
        output.WriteLine($"container: {checkedBytes} bytes checked from the host; ready in {toReady.TotalMilliseconds:0} ms cold, {warmToReady.TotalMilliseconds:0} ms warm; " +
                         $"cold read {coldRead.TotalMilliseconds:0} ms ({checkedBytes / coldRead.TotalSeconds / 1e6:0} MB/s), warm read {warmRead.TotalMilliseconds:0} ms; " +
                         $"podman stop {stopTime.TotalMilliseconds:0} ms; warm start fetched {warmFetched} bytes");
        Assert.Equal(0, warmFetched);
        Assert.DoesNotContain(s3.SecretKey, logs);
        Assert.DoesNotContain(s3.SecretKey, described);
        Assert.Contains("AWS_SECRET_ACCESS_KEY=", environment); // it did arrive, through the environment
        Assert.Contains("mlfs: ready:", logs);
    }
}
