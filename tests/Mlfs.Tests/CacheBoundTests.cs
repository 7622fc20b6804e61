using System.Runtime.InteropServices;
using System.Text.Json;
using MlArtifactFs.Fuse;
using MlArtifactFs.Telemetry;
using Mlfs.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// The cache bound holds for files larger than the cache: chunks are evicted (least recently used, never
/// one a reader is using or inside an open file's read-ahead window), one bound for every process on the
/// directory; whatever was evicted is fetched and verified again. And status says what the daemon saw.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class CacheBoundTests(S3Fixture s3, RedisFixture redis, ITestOutputHelper output) : MountProcessTestBase("mlfs-bound-")
{
    private const int Chunk = 1 << 20;
    private const long Bound = 24L << 20;
    private const int FileSize = 72 << 20; // three times the bound
    private string CacheDir => _work.CreateSubdirectory("cache").FullName;

    [Fact]
    public async Task AFileThreeTimesTheBoundStreamsThroughItTwiceExactlyInOneProcess()
    {
        _model.Add("weights.bin", FileSize, 71);
        string manifest = await _model.PublishAsync(s3, "bound1");
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, mp, CacheDir, s3.Environment(), true,
            "--cache-size", "24M");
        using var disk = new DiskUseSampler(CacheDir);
        for (int pass = 0; pass < 2; pass++)
            Check.SameBytes(_model.Files["weights.bin"], await ReadSequentiallyAsync(Path.Combine(mp, "weights.bin")), $"pass {pass}");
        var status = await StatusAsync(mp);
        output.WriteLine($"one process: peak disk use {disk.Peak >> 20} MiB for a {Bound >> 20} MiB bound; {Long(status, "chunks_evicted")} chunks evicted");
        Assert.True(disk.Peak <= Bound * 5 / 4, $"peak cache disk use {disk.Peak} bytes > 1.25 x {Bound}");
        Assert.True(Long(status, "chunks_evicted") >= 2 * (FileSize - Bound) / Chunk, $"{Long(status, "chunks_evicted")} chunks evicted");
        // The second pass found nothing of the first's head left; a chunk evicted between its fetch and its read
        // (the kernel reads ahead of the reader too) is fetched again, which a cache this small allows, rarely.
        long fetched = Long(status, "bytes_fetched");
        Assert.True(fetched >= 2L * FileSize && fetched <= 2L * FileSize * 11 / 10, $"{fetched} bytes fetched for two passes over {FileSize}");
        Assert.Equal(0, Long(status, "unverified_bytes_served"));
    }

    [Fact]
    public async Task TwoProcessesSharingTheCacheDirectoryKeepToOneBound()
    {
        _model.Add("a.bin", FileSize, 72).Add("b.bin", FileSize, 73);
        string manifest = await _model.PublishAsync(s3, "bound2");
        string mpA = NewMountPoint(), mpB = NewMountPoint();
        string[] extra = ["--cache-size", "24M", "--redis", redis.ConnectionString];
        await using var first = await MountProcess.StartAsync(_work.FullName, manifest, mpA, CacheDir, s3.Environment(), true, extra);
        await using var second = await MountProcess.StartAsync(_work.FullName, manifest, mpB, CacheDir, s3.Environment(), true, extra);
        using var disk = new DiskUseSampler(CacheDir);
        // Each streams a different file, then the other's: every chunk is fetched by one and evicted by either.
        var reads = new[] { (mpA, "a.bin", "b.bin"), (mpB, "b.bin", "a.bin") }.Select(r => Task.Run(async () =>
        {
            foreach (string file in new[] { r.Item2, r.Item3 })
                Check.SameBytes(_model.Files[file], await ReadSequentiallyAsync(Path.Combine(r.Item1, file)), $"{file} through {r.Item1}");
        }));
        await Task.WhenAll(reads);
        long evicted = Long(await StatusAsync(mpA), "bytes_evicted") + Long(await StatusAsync(mpB), "bytes_evicted");
        output.WriteLine($"two processes: peak disk use {disk.Peak >> 20} MiB for a {Bound >> 20} MiB bound; {evicted >> 20} MiB evicted");
        Assert.True(disk.Peak <= Bound * 5 / 4, $"peak cache disk use {disk.Peak} bytes > 1.25 x {Bound}");
        Assert.True(evicted > 0);
    }

    /// <summary>A range evicted under one reader is read by a second: it is fetched again and verified, byte-exact.</summary>
    [Fact]
    public async Task ASecondReaderOfAnEvictedRangeGetsItFetchedAgainAndVerified()
    {
        _model.Add("weights.bin", FileSize, 74);
        string manifest = await _model.PublishAsync(s3, "bound3");
        await using var mount = await InProcessMount.StartAsync(s3, manifest, CacheDir, cacheSize: Bound);
        var expected = _model.Files["weights.bin"];
        var head = new byte[Chunk];
        using (var first = File.OpenHandle(mount["weights.bin"]))
        {
            Assert.Equal(Chunk, RandomAccess.Read(first, head, 0));
            Assert.True(expected.AsSpan(0, Chunk).SequenceEqual(head));
        }
        Check.SameBytes(expected, await ReadSequentiallyAsync(mount["weights.bin"]), "the streaming reader");
        Assert.True(mount.Mount.Stats[Counters.ChunksEvicted] > 0);
        long fetched = mount.Mount.Stats[Counters.BytesFetched];
        DropPageCache(mount["weights.bin"]);
        using (var second = File.OpenHandle(mount["weights.bin"]))
        {
            Array.Clear(head);
            Assert.Equal(Chunk, RandomAccess.Read(second, head, 0));
            Assert.True(expected.AsSpan(0, Chunk).SequenceEqual(head), "the evicted head, read again");
        }
        Assert.True(mount.Mount.Stats[Counters.BytesFetched] > fetched, "the evicted head was fetched again");
        Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
    }

    /// <summary>
    /// SIGKILL while chunks are being evicted: a restart on the same directory serves every byte exact
    /// (a chunk half punched is not in the record, or fails its hash and is fetched again).
    /// </summary>
    [Fact]
    public async Task AKillDuringEvictionLeavesNothingARestartServesUnverified()
    {
        _model.Add("weights.bin", FileSize, 75);
        string manifest = await _model.PublishAsync(s3, "bound4");
        string mp = NewMountPoint();
        var expected = _model.Files["weights.bin"];
        await using (var doomed = await MountProcess.StartAsync(_work.FullName, manifest, mp, CacheDir, s3.Environment(), true, "--cache-size", "24M"))
        {
            // Pass after pass through the 24 MiB cache: from the first eviction on, chunks are evicted all the time.
            using var stop = new CancellationTokenSource();
            var reading = Task.Run(() =>
            {
                try
                {
                    while (!stop.IsCancellationRequested) ReadSequentiallyAsync(Path.Combine(mp, "weights.bin")).GetAwaiter().GetResult();
                }
                catch (IOException) { } // the daemon dies under it
            });
            var waited = System.Diagnostics.Stopwatch.StartNew();
            while (Long(await StatusAsync(mp), "chunks_evicted") == 0)
            {
                Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2) && !reading.IsCompleted, "nothing was evicted");
                await Task.Delay(10);
            }
            stop.Cancel();
            doomed.Process.Kill(); // SIGKILL, with evictions going on
            await doomed.Process.WaitForExitAsync();
            FuseMounter.TryUnmount(mp, lazy: true);
            await reading;
        }
        string mp2 = NewMountPoint();
        await using var restarted = await MountProcess.StartAsync(_work.FullName, manifest, mp2, CacheDir, s3.Environment(), true, "--cache-size", "24M");
        Check.SameBytes(expected, await ReadSequentiallyAsync(Path.Combine(mp2, "weights.bin")), "after the restart");
        var status = await StatusAsync(mp2);
        Assert.Equal(0, Long(status, "unverified_bytes_served"));
        Assert.Equal(0, Long(status, "fetch_failures"));
    }

    /// <summary>
    /// A warm mount reads everything through passthrough: the daemon sees the opens but no reads, and status
    /// says so (no hit ratio to report rather than 0 %), with the passthrough opens and bytes.
    /// </summary>
    [Fact]
    public async Task StatusOnAWarmPassthroughMountCountsOpensAndReportsNoHitRatio()
    {
        _model.Add("config.json", 4096, 76).Add("weights.bin", 3 * Chunk + 17, 77);
        string manifest = await _model.PublishAsync(s3, "status");
        await using (var cold = await InProcessMount.StartAsync(s3, manifest, CacheDir))
        {
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(cold[path]), path);
            Assert.NotNull(cold.Mount.GetStatus().HitRatio); // the daemon saw these reads
        }
        string mp = NewMountPoint();
        await using var warm = await MountProcess.StartAsync(_work.FullName, manifest, mp, CacheDir, s3.Environment(), true);
        // Files cached by the earlier run open in passthrough once the restart has checked them (logged).
        var checking = System.Diagnostics.Stopwatch.StartNew();
        while (!warm.Stderr.Contains("checked 2 file(s) cached by an earlier run", StringComparison.Ordinal))
        {
            Assert.True(checking.Elapsed < TimeSpan.FromMinutes(1), "the cached files were never checked:\n" + warm.Stderr);
            await Task.Delay(20);
        }
        for (int i = 0; i < 3; i++)
        {
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path);
            // RELEASE reaches the daemon asynchronously; the next open of a file waits for it (bounded).
            var released = System.Diagnostics.Stopwatch.StartNew();
            while (Long(await StatusAsync(mp), "open_files") > 0 && released.Elapsed < TimeSpan.FromMinutes(1)) await Task.Delay(10);
        }
        var status = await StatusAsync(mp);
        output.WriteLine(status.ToString());
        Assert.True(status.GetProperty("passthrough").GetBoolean(), "this kernel offers passthrough and the mount runs as root");
        Assert.Equal(6, Long(status, "opens"));
        Assert.Equal(6, Long(status, "passthrough_opens"));
        Assert.Equal(3L * _model.Files.Values.Sum(f => (long)f.Length), Long(status, "passthrough_file_bytes"));
        Assert.Equal(JsonValueKind.Null, status.GetProperty("hit_ratio").ValueKind); // the daemon saw no read: no ratio, not 0 %
        Assert.Equal(0.0, status.GetProperty("daemon_open_share").GetDouble());
        Assert.Equal(0, Long(status, "bytes_fetched"));

        var text = await Repo.RunAsync(Repo.Mlfs, ["status", mp]);
        Assert.True(text.ExitCode == 0, text.Stderr);
        output.WriteLine(text.Stdout);
        Assert.DoesNotContain("0.0 %", text.Stdout);
        Assert.Contains("6 in passthrough", text.Stdout);
    }

    /// <summary>Reads the whole file through the daemon: the kernel's page cache of it is dropped first (else a second pass never reaches us).</summary>
    private static async Task<byte[]> ReadSequentiallyAsync(string path) => await Task.Run(() =>
    {
        DropPageCache(path);
        return File.ReadAllBytes(path);
    });

    private static long Long(JsonElement status, string name) => status.GetProperty(name).GetInt64();

    /// <summary>Samples the blocks allocated under a directory (every file's st_blocks) until disposed; keeps the peak.</summary>
    private sealed class DiskUseSampler : IDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _sampling;
        private long _peak;

        public DiskUseSampler(string directory)
        {
            _sampling = Task.Run(() =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    long used = 0;
                    try
                    {
                        foreach (string file in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
                            used += AllocatedBytes(file);
                    }
                    catch (IOException) { } // a file went while it was listed
                    if (used > _peak) _peak = used;
                    Thread.Sleep(2);
                }
            });
        }

        public long Peak
        {
            get
            {
                _stop.Cancel();
                _sampling.Wait();
                return _peak;
            }
        }

        public void Dispose() => _stop.Cancel();

        private static long AllocatedBytes(string path)
        {
            var st = new byte[256];
            if (stat(path, st) != 0) return 0;
            return BitConverter.ToInt64(st, 64) * 512; // st_blocks on x86-64 Linux: 512-byte units
        }

        [DllImport("libc", SetLastError = true)]
        private static extern int stat(string path, byte[] buffer);
    }
}
