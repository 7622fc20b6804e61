using System.Diagnostics;
using Aspire.Hosting;
using Aspire.Hosting.ApplicationModel;
using Aspire.Hosting.Testing;
using Microsoft.Extensions.DependencyInjection;

namespace AppHost.Tests;

/// <summary>The development stack as `dotnet run --project AppHost` starts it, in a test.</summary>
public sealed class AppHostTests
{
    [Fact]
    public Task TheStackStartsMountsTheSampleByteExactAndExportsFetchSpans() => RunStackAsync(mountInContainer: false);

    /// <summary>
    /// MLFS_DEV_MOUNT_CONTAINER=1: the mount service runs in a container of the image scripts/test.sh built
    /// (localhost/mlfs:test), and the host reads the model through the propagated mount. Stopping the stack
    /// stops the container and leaves no mount behind.
    /// </summary>
    [Fact]
    public Task TheStackRunsTheMountServiceInAContainer() => RunStackAsync(mountInContainer: true);

    /// <summary>
    /// MLFS_DEV_FLEET=1: three mount services with their own caches serve each other: after the first reads
    /// the model (from S3), the others read it byte-exact, and peer fetch spans reach the collector.
    /// </summary>
    [Fact]
    public Task TheFleetProfileRunsThreeMountsThatShareChunks() => RunStackAsync(mountInContainer: false, fleet: true);

    /// <summary>Both profiles at once: three mount service containers sharing chunks (the token reaches each as -e NAME).</summary>
    [Fact]
    public Task TheFleetProfileRunsInContainersToo() => RunStackAsync(mountInContainer: true, fleet: true);

    private static async Task RunStackAsync(bool mountInContainer, bool fleet = false)
    {
        string work = Directory.CreateTempSubdirectory("mlfs-apphost-").FullName;
        string mountPoint = Path.Combine(work, "mnt");
        string[] mounts = fleet ? ["mount-1", "mount-2", "mount-3"] : ["mount"];
        string[] mountPoints = fleet ? [.. Enumerable.Range(1, 3).Select(i => $"{mountPoint}-{i}")] : [mountPoint];
        using var collector = new OtlpCollector();
        string[] settings =
        [
            $"MLFS_DEV_DIR={work}", $"MLFS_DEV_MOUNT={mountPoint}", "MLFS_SAMPLE_MB=16",
            "MLFS_S3_PORT=18180", "MLFS_REDIS_PORT=16479",
        ];
        if (mountInContainer) settings = [.. settings, "MLFS_DEV_MOUNT_CONTAINER=1", "MLFS_DEV_MOUNT_IMAGE=localhost/mlfs:test"];
        if (fleet) settings = [.. settings, "MLFS_DEV_FLEET=1"];
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.AppHost>(settings);
        // Send the mount services' telemetry to our collector, quickly.
        foreach (var mountResource in builder.Resources.Where(r => mounts.Contains(r.Name)))
            mountResource.Annotations.Add(new EnvironmentCallbackAnnotation(context =>
            {
                context.EnvironmentVariables["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.Endpoint;
                context.EnvironmentVariables["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf";
                context.EnvironmentVariables["OTEL_BSP_SCHEDULE_DELAY"] = "200";
                context.EnvironmentVariables.Remove("OTEL_EXPORTER_OTLP_HEADERS");
            }));

        var errors = new List<string>();
        var all = new List<string>();
        await using var app = await builder.BuildAsync();
        var logs = app.Services.GetRequiredService<ResourceLoggerService>();
        using var stop = new CancellationTokenSource();
        string[] resources = ["s3", "redis", "seed", .. mounts];
        var watchers = resources.Select(name => Task.Run(async () =>
        {
            try
            {
                await foreach (var batch in logs.WatchAsync(name).WithCancellation(stop.Token))
                    foreach (var line in batch)
                    {
                        lock (all) all.Add($"{name}: {line.Content}");
                        if (line.Content.Contains(" fail:", StringComparison.Ordinal) || line.Content.Contains("error:", StringComparison.OrdinalIgnoreCase) || line.Content.Contains("Exception", StringComparison.Ordinal))
                            lock (errors) errors.Add($"{name}: {line.Content}");
                    }
            }
            catch (OperationCanceledException) { }
        })).ToArray();

        bool completed = false; // the checks after the stop only count when the run itself got through
        try
        {
            await app.StartAsync().WaitAsync(TimeSpan.FromMinutes(5));
            var notifications = app.Services.GetRequiredService<ResourceNotificationService>();
            try
            {
                foreach (var name in mounts) await notifications.WaitForResourceHealthyAsync(name).WaitAsync(TimeSpan.FromMinutes(5));
            }
            catch (Exception e)
            {
                lock (all) Assert.Fail($"the mount did not become healthy ({e.Message}); resource logs:\n{string.Join('\n', all.TakeLast(60))}");
            }

            if (mountInContainer)
            {
                // The mount the host sees is the running container's.
                foreach (var mp in mountPoints)
                    Assert.Contains(File.ReadAllLines("/proc/self/mountinfo"), l => l.Split(' ')[4] == mp && l.Contains(" - fuse.mlfs ", StringComparison.Ordinal));
                Assert.Equal(mountPoints.Length, MountContainers().Count);
            }
            // One mount after the other: in the fleet profile the first reads from S3, the others from it.
            foreach (var mp in mountPoints)
                foreach (var file in new[] { "config.json", "tokenizer.json", "model.safetensors" })
                {
                    var expected = await File.ReadAllBytesAsync(Path.Combine(work, "model-v1", file));
                    var actual = await File.ReadAllBytesAsync(Path.Combine(mp, file));
                    Assert.True(expected.AsSpan().SequenceEqual(actual), $"{file} differs through {mp}");
                }

            // The dashboard's Switch command, through the control socket (shared with the container).
            var commands = app.Services.GetRequiredService<ResourceCommandService>();
            var switched = await commands.ExecuteCommandAsync(mounts[0], "switch-v2", CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(2));
            Assert.True(switched.Success, $"switch to v2 failed: {switched.Message}");
            Assert.Equal(await File.ReadAllBytesAsync(Path.Combine(work, "model-v2", "config.json")), await File.ReadAllBytesAsync(Path.Combine(mountPoints[0], "config.json")));

            if (fleet)
            {
                // Peer GETs (the only spans that name a chunk by its id) reach the dashboard's collector.
                var waited = Stopwatch.StartNew();
                while (!collector.ReceivedTraceContaining("mlfs.chunk.id") && waited.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(200);
                Assert.True(collector.ReceivedTraceContaining("mlfs.chunk.id"), "no peer fetch span reached the collector");
            }

            var sw = Stopwatch.StartNew();
            while (!collector.ReceivedTraceContaining("mlfs.fetch") && sw.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(200);
            Assert.True(collector.ReceivedTraceContaining("mlfs.fetch"), "no fetch span reached the collector");
            Assert.True(collector.ReceivedTraceContaining("mlfs.file"), "fetch spans carry the file attribute");
            lock (errors) Assert.True(errors.Count == 0, string.Join('\n', errors));
            completed = true;
        }
        finally
        {
            stop.Cancel();
            await app.StopAsync().WaitAsync(TimeSpan.FromMinutes(1));
            await Task.WhenAll(watchers);
            bool leftMounted = mountPoints.Any(IsMounted);
            foreach (var mp in mountPoints)
                for (int i = 0; i < 5 && IsMounted(mp); i++) Process.Start("umount", ["-l", mp])!.WaitForExit();
            if (mountInContainer)
            {
                var containersLeft = MountContainers();
                foreach (var id in containersLeft) Process.Start("podman", ["rm", "-f", id])!.WaitForExit();
                if (completed) Assert.True(containersLeft.Count == 0, $"containers left after the stack stopped: {string.Join(' ', containersLeft)}");
            }
            if (completed && leftMounted)
                lock (all) Assert.Fail($"a mount point was still mounted after the stack stopped; the mounts' last log lines:\n{string.Join('\n', all.Where(l => mounts.Any(m => l.StartsWith(m + ":", StringComparison.Ordinal))).TakeLast(30))}");
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
    }

    private static List<string> MountContainers()
    {
        var psi = new ProcessStartInfo("podman", ["ps", "-a", "-q", "--filter", "name=mlfs-dev-mount-"]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string ids = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return [.. ids.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }

    private static bool IsMounted(string path) =>
        File.ReadAllLines("/proc/self/mountinfo").Any(l => l.Split(' ')[4] == path);
}

/// <summary>The dev stack's choice between containers and local processes never depends on a registry.</summary>
public sealed class ContainerProbeTests
{
    [Fact]
    public void AnEngineWithoutItsImagesAndNoRegistryMeansLocalProcesses()
    {
        var asked = new List<string>();
        var (use, why) = ContainerProbe.Decide((file, args, _) =>
        {
            asked.Add($"{file} {string.Join(' ', args)}");
            return args[0] == "info" && file == "podman"; // podman answers; no image is present and none pulls
        });
        Assert.False(use);
        Assert.Contains("could not be pulled", why);
        Assert.Contains(asked, a => a.StartsWith("podman pull", StringComparison.Ordinal));
    }

    [Fact]
    public void AnEngineWithItsImagesMeansContainers()
    {
        var (use, _) = ContainerProbe.Decide((file, args, _) => file == "podman" && args[0] is "info" or "image");
        Assert.True(use);
    }

    [Fact]
    public void NoEngineMeansLocalProcesses() => Assert.False(ContainerProbe.Decide((_, _, _) => false).UseContainers);
}
