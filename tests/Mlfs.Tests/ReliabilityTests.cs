using MlArtifactFs.Telemetry;
using MlArtifactFs.Fetching;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>Stalls, load, and what must never show in logs. Bounded in count and time.</summary>
[Collection(S3Collection.Name)]
public sealed class ReliabilityTests(S3Fixture s3) : ModelTestBase
{

    [Fact]
    public async Task AStalledServerGivesEioAfterTheConfiguredAttemptsAndTheMountStaysUsable()
    {
        _model.Add("stalls.bin", 2 * Chunk, 1).Add("fine.bin", Chunk, 2);
        string manifest = await _model.PublishAsync(s3, "stall");
        await using var proxy = new FaultProxy(s3.Endpoint) { Faults = (_, key) => key.EndsWith("stalls.bin", StringComparison.Ordinal) ? ProxyFault.Stall : ProxyFault.None };
        var fetcher = InProcessMount.FastRetries with { StallTimeout = TimeSpan.FromMilliseconds(500), MaxAttempts = 2 };
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint, fetcher: fetcher);
        var error = await Assert.ThrowsAnyAsync<IOException>(() => Task.Run(() => File.ReadAllBytes(mount["stalls.bin"])).WaitAsync(TimeSpan.FromMinutes(1)));
        Assert.Contains("Input/output error", error.Message);
        Assert.Contains(mount.Logger.Lines, l => l.Contains("stalls.bin", StringComparison.Ordinal) && l.Contains("stalled", StringComparison.Ordinal));
        Check.SameBytes(_model.Files["fine.bin"], await File.ReadAllBytesAsync(mount["fine.bin"]), "fine.bin after the stall");
    }

    [Fact]
    public async Task SixtyFourReadersOverSixteenFilesAllCorrectAndNothingLeaks()
    {
        for (int i = 0; i < 16; i++) _model.Add($"shard-{i:D2}.bin", 2 * Chunk + i * 4099, 100 + i);
        string manifest = await _model.PublishAsync(s3, "load", chunkSize: 256 * 1024);
        int fdsBefore = Directory.GetFiles("/proc/self/fd").Length;

        await using (var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName,
                         fetcher: InProcessMount.FastRetries with { MaxConcurrentFetches = 4 }))
        {
            var files = _model.Files.OrderBy(f => f.Key).ToArray();
            var readers = Enumerable.Range(0, 64).Select(r => Task.Run(() =>
            {
                var (path, expected) = files[r % files.Length];
                using var handle = File.OpenHandle(mount[path]);
                var random = new Random(r);
                var buffer = new byte[256 * 1024];
                if (r % 2 == 0)
                {
                    for (long offset = 0; offset < expected.Length;) // sequential
                    {
                        int n = RandomAccess.Read(handle, buffer, offset);
                        if (!expected.AsSpan((int)offset, n).SequenceEqual(buffer.AsSpan(0, n))) throw new InvalidDataException($"{path} @ {offset}");
                        offset += n;
                    }
                }
                else
                {
                    for (int i = 0; i < 100; i++) // random
                    {
                        long offset = random.NextInt64(expected.Length);
                        int n = RandomAccess.Read(handle, buffer.AsSpan(0, random.Next(1, buffer.Length)), offset);
                        if (!expected.AsSpan((int)offset, n).SequenceEqual(buffer.AsSpan(0, n))) throw new InvalidDataException($"{path} @ {offset}");
                    }
                }
            })).ToArray();
            await Task.WhenAll(readers).WaitAsync(TimeSpan.FromMinutes(3));
            Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
            // RELEASE reaches the daemon asynchronously after close(): wait (bounded) for every one.
            Assert.True(await Check.EventuallyAsync(() => mount.Mount.FileSystem.OpenHandles == 0), $"{mount.Mount.FileSystem.OpenHandles} handle(s) still open");
        }
        // The runtime closes some descriptors asynchronously after the unmount: wait (bounded) for the count to settle.
        int fdsAfter = 0;
        await Check.EventuallyAsync(() => (fdsAfter = Directory.GetFiles("/proc/self/fd").Length) <= fdsBefore + 4);
        Assert.True(fdsAfter <= fdsBefore + 4, $"file descriptors: {fdsBefore} before, {fdsAfter} after the mount");
    }

    [Fact]
    public async Task CtrlCOnAReaderBlockedOnAStalledFetchReturnsAtOnceAndTheMountStaysUsable()
    {
        _model.Add("weights.bin", 4 * Chunk, 21);
        string manifest = await _model.PublishAsync(s3, "ctrlc");
        await using var proxy = new FaultProxy(s3.Endpoint) { PauseAfter = 4096 }; // every body hangs after 4 KiB
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint,
            fetcher: InProcessMount.FastRetries with { StallTimeout = TimeSpan.FromMinutes(5) });
        // cat keeps SIGINT's default action, as most readers do: Ctrl-C is fatal, and a fatal signal ends even a
        // page-cache read that waits on the daemon (a handled SIGINT waits for the READ: the kernel's rule, not ours).
        using var reader = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("cat", [mount["weights.bin"]]) { RedirectStandardOutput = true })!;
        await proxy.Paused.Task.WaitAsync(TimeSpan.FromSeconds(60));
        await Check.EventuallyAsync(() => mount.Mount.Session.PendingReads > 0);
        Assert.True(mount.Mount.Session.PendingReads > 0, "the reader's READ should be waiting on the stalled body");

        Assert.Equal(0, Repo.Signal(reader.Id, "INT")); // Ctrl-C
        await reader.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)); // returns while the body still hangs
        Assert.NotEqual(0, reader.ExitCode);
        Assert.True(proxy.BytesSent < 4 * Chunk, $"{proxy.BytesSent} bytes had been sent: the body was not held");

        // What the reader left pending is finished into the cache once data flows, and the mount serves on.
        proxy.PauseAfter = null;
        proxy.Release.SetResult();
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(mount["weights.bin"]), "weights.bin after the interrupted read");
        await Check.EventuallyAsync(() => mount.Mount.Session.PendingReads == 0);
        Assert.Equal(0, mount.Mount.Session.PendingReads);
        Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
    }

    [Fact]
    public async Task NoSignatureOrPresignedQueryEverReachesTheLogsOrTraces()
    {
        const string signature = "f00dfeedcafe1234deadbeef5678";
        const string credential = "AKIAEXAMPLESECRETKEY";
        _model.Add("weights.bin", Chunk, 7);
        string bucket = await s3.CreateBucketAsync("secret");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string url = $"{s3.Endpoint}/{bucket}/m/weights.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={credential}%2F20261129%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261129T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}";
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m");
        await File.WriteAllTextAsync(manifest, (await File.ReadAllTextAsync(manifest)).Replace($"s3://{bucket}/m/weights.bin", url, StringComparison.Ordinal));

        // Traces too: every span of every source in this process (ours and HttpClient's), with tags, events and status.
        var spans = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = _ => true,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => spans.Enqueue(string.Join(' ', new[] { a.Source.Name, a.DisplayName, a.StatusDescription ?? "" }
                .Concat(a.TagObjects.Select(t => $"{t.Key}={t.Value}"))
                .Concat(a.Events.SelectMany(e => e.Tags.Select(t => $"{e.Name}:{t.Key}={t.Value}"))))),
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);

        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, fetcher: InProcessMount.FastRetries with { MaxAttempts = 2 });
        var error = await Assert.ThrowsAnyAsync<IOException>(() => File.ReadAllBytesAsync(mount["weights.bin"])); // the server refuses a bad presigned URL
        string logs = mount.Logger.All;
        Assert.Contains("weights.bin", logs);
        Assert.Contains("(presigned)", logs);
        string traces = string.Join('\n', spans);
        Assert.Contains("mlfs.fetch", traces); // the fetch spans were seen
        foreach (string output in new[] { logs, traces, error.ToString() })
        {
            Assert.DoesNotContain(signature, output);
            Assert.DoesNotContain(credential, output);
            Assert.DoesNotContain("Signature=", output);
        }
    }

    [Fact]
    public async Task WhenTheCacheDiskIsFullReadsAreStillServedAndNothingCorruptIsCached()
    {
        _model.Add("big.bin", 10 * Chunk + 123, 9);
        string manifest = await _model.PublishAsync(s3, "full");
        string small = Path.Combine(_cache.FullName, "small");
        Directory.CreateDirectory(small);
        var tmpfs = await Repo.RunAsync("mount", ["-t", "tmpfs", "-o", "size=4m,mode=0700", "mlfs-test-full", small]); // a 4 MiB disk for a 10 MiB file
        Assert.True(tmpfs.ExitCode == 0, tmpfs.Stderr);
        try
        {
            await using (var mount = await InProcessMount.StartAsync(s3, manifest, small))
            {
                Check.SameBytes(_model.Files["big.bin"], await File.ReadAllBytesAsync(mount["big.bin"]), "big.bin on a full cache disk");
                Assert.True(mount.Mount.Fetcher.CacheFull);
                Assert.Contains(mount.Logger.Lines, l => l.Contains("the cache disk is full", StringComparison.Ordinal));
            }
            // What did get cached is whole and verified: a new mount on the same cache reads it back exactly.
            await using (var again = await InProcessMount.StartAsync(s3, manifest, small))
                Check.SameBytes(_model.Files["big.bin"], await File.ReadAllBytesAsync(again["big.bin"]), "big.bin after remount");
        }
        finally
        {
            await Repo.RunAsync("umount", ["-l", small]);
        }
    }
}
