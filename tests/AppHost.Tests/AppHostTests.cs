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
    public async Task TheStackStartsMountsTheSampleByteExactAndExportsFetchSpans()
    {
        string work = Directory.CreateTempSubdirectory("mlfs-apphost-").FullName;
        string mountPoint = Path.Combine(work, "mnt");
        using var collector = new OtlpCollector();
        var builder = await DistributedApplicationTestingBuilder.CreateAsync<Projects.AppHost>(
        [
            $"MLFS_DEV_DIR={work}", $"MLFS_DEV_MOUNT={mountPoint}", "MLFS_SAMPLE_MB=16",
            "MLFS_S3_PORT=18180", "MLFS_REDIS_PORT=16479",
        ]);
        // Send the mount service's telemetry to our collector, quickly.
        var mountResource = builder.Resources.Single(r => r.Name == "mount");
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
        var watchers = new[] { "s3", "redis", "seed", "mount" }.Select(name => Task.Run(async () =>
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

        try
        {
            await app.StartAsync().WaitAsync(TimeSpan.FromMinutes(5));
            var notifications = app.Services.GetRequiredService<ResourceNotificationService>();
            try
            {
                await notifications.WaitForResourceHealthyAsync("mount").WaitAsync(TimeSpan.FromMinutes(5));
            }
            catch (Exception e)
            {
                lock (all) Assert.Fail($"the mount did not become healthy ({e.Message}); resource logs:\n{string.Join('\n', all.TakeLast(60))}");
            }

            foreach (var file in new[] { "config.json", "tokenizer.json", "model.safetensors" })
            {
                var expected = await File.ReadAllBytesAsync(Path.Combine(work, "model-v1", file));
                var actual = await File.ReadAllBytesAsync(Path.Combine(mountPoint, file));
                Assert.True(expected.AsSpan().SequenceEqual(actual), $"{file} differs through the mount");
            }

            var sw = Stopwatch.StartNew();
            while (!collector.ReceivedTraceContaining("mlfs.fetch") && sw.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(200);
            Assert.True(collector.ReceivedTraceContaining("mlfs.fetch"), "no fetch span reached the collector");
            Assert.True(collector.ReceivedTraceContaining("mlfs.file"), "fetch spans carry the file attribute");
            lock (errors) Assert.True(errors.Count == 0, string.Join('\n', errors));
        }
        finally
        {
            stop.Cancel();
            await app.StopAsync().WaitAsync(TimeSpan.FromMinutes(1));
            await Task.WhenAll(watchers);
            if (IsMounted(mountPoint)) Process.Start("umount", ["-l", mountPoint])!.WaitForExit();
            try { Directory.Delete(work, recursive: true); } catch (IOException) { }
        }
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
