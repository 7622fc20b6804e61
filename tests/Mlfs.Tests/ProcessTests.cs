using System.Diagnostics;
using Mlfs.Tests.Infrastructure;
using MlArtifactFs.Fuse;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>The `mlfs` executable as users run it: the seed's workflow, exit codes, crash recovery.</summary>
[Collection(S3Collection.Name)]
public sealed class ProcessTests(S3Fixture s3, ITestOutputHelper output) : MountProcessTestBase("mlfs-proc-")
{
    private string NewDir(string name) => _work.CreateSubdirectory(name).FullName;

    private Task<MountProcess> StartMountAsync(string manifest, string mountPoint, string cacheDir, Dictionary<string, string?> env,
        bool waitReady = true, params string[] extra) =>
        MountProcess.StartAsync(_work.FullName, manifest, mountPoint, cacheDir, env, waitReady, extra);

    private static async Task<Repo.Result> Mlfs(params string[] args) => await Repo.RunAsync(Repo.Mlfs, args);

    /// <summary>`generate -o` streams into a temporary name and renames it once complete: a failure leaves nothing behind.</summary>
    [Fact]
    public async Task GenerateWritesItsOutputWholeOrNotAtAll()
    {
        _model.Add("config.json", 300, 1).Add("weights.bin", (2 << 20) + 5, 2);
        string output = Path.Combine(_work.FullName, "m.json");
        var toStdout = await Mlfs("generate", "--id", "m", "--version", "v1", "--url-prefix", "s3://b/m", _model.Folder);
        var toFile = await Mlfs("generate", "--id", "m", "--version", "v1", "--url-prefix", "s3://b/m", "-o", output, _model.Folder);
        Assert.True(toFile.ExitCode == 0, toFile.Stderr);
        Assert.Equal(toStdout.Stdout, await File.ReadAllTextAsync(output));

        // A FIFO in the folder: refused by name (exit 2); the earlier manifest stays, and no partial file is left.
        Assert.Equal(0, (await Repo.RunAsync("mkfifo", [Path.Combine(_model.Folder, "zz-pipe")])).ExitCode);
        var refused = await Mlfs("generate", "--id", "m", "--version", "v2", "--url-prefix", "s3://b/m", "-o", output, _model.Folder);
        Assert.Equal(2, refused.ExitCode);
        Assert.Contains("zz-pipe", refused.Stderr);
        Assert.Equal(toStdout.Stdout, await File.ReadAllTextAsync(output));
        Assert.Equal(["m.json"], Directory.EnumerateFiles(_work.FullName, "m.json*").Select(Path.GetFileName));
    }

    [Fact]
    public async Task TheSeedWorkflowEndToEnd()
    {
        _model.Add("config.json", "{\"model_type\": \"bert\"}"u8.ToArray())
              .Add("tokenizer.json", 20_000, 1)
              .Add("model.safetensors", (3 << 20) + 333, 2)
              .Add("nested/dir/extra file ü.bin", 70_000, 3)
              .Add("empty.txt", 0, 4);
        string bucket = await s3.CreateBucketAsync("seed");

        // 1. generate
        var generated = await Mlfs("generate", "--id", "bert", "--version", "v1", "--url-prefix", $"s3://{bucket}/bert/v1",
            "--prefetch", "config.json,tokenizer.json", "--chunk-size", "1M", _model.Folder);
        Assert.True(generated.ExitCode == 0, generated.Stderr);
        string manifest = Path.Combine(_work.FullName, "bert-v1.json");
        await File.WriteAllTextAsync(manifest, generated.Stdout);

        // 2. upload (what `aws s3 sync` does)
        await s3.UploadFolderAsync(bucket, "bert/v1", _model.Folder);

        // 3. mount
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        await using var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
        Assert.Contains("ready: bert v1 mounted at", mount.Stdout);

        // 4. read everything
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mountPoint, path)), path);
        var listed = Directory.EnumerateFiles(mountPoint, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(mountPoint, p)).Order(StringComparer.Ordinal);
        Assert.Equal(_model.Files.Keys.Order(StringComparer.Ordinal), listed);

        var status = await Mlfs("status", mountPoint);
        Assert.True(status.ExitCode == 0, status.Stderr);
        Assert.Contains("model:           bert v1 (5 files", status.Stdout);

        // 5. stop with SIGTERM: clean unmount, exit 0
        Assert.Equal(0, Repo.Signal(mount.Process.Id, "TERM"));
        await mount.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, mount.Process.ExitCode);
        Assert.False(FuseMounter.IsMountPoint(mountPoint));
        Assert.DoesNotContain(s3.SecretKey, mount.Stdout + mount.Stderr);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(cacheDir));
    }

    [Fact]
    public async Task WrongCredentialsExitWithTheStorageCodeAndNeverPrintTheSecret()
    {
        _model.Add("config.json", 100, 5);
        string manifest = await _model.PublishAsync(s3, "cred", prefetch: ["config.json"]);
        const string secret = "wrong-secret-that-must-not-leak-42";
        await using var mount = await StartMountAsync(manifest, NewDir("mnt"), Path.Combine(_work.FullName, "cache"), s3.Environment(secret: secret), waitReady: false);
        await mount.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(ExitCodes.StorageError, mount.Process.ExitCode);
        Assert.Contains("prefetch failed", mount.Stderr);
        Assert.Contains("HTTP 403", mount.Stderr);
        Assert.Contains("check AWS_ACCESS_KEY_ID", mount.Stderr);
        Assert.DoesNotContain(secret, mount.Stdout + mount.Stderr);
        Assert.DoesNotContain("Signature=", mount.Stdout + mount.Stderr);
    }

    [Fact]
    public async Task MountPointErrorsAreClearWithTheMountExitCode()
    {
        _model.Add("a.bin", 10, 6);
        string manifest = await _model.WriteManifestAsync("s3://nowhere/m");
        var missing = await Mlfs("mount", "--manifest", manifest, "--cache-dir", Path.Combine(_work.FullName, "c"), Path.Combine(_work.FullName, "nope"));
        Assert.Equal(ExitCodes.MountError, missing.ExitCode);
        Assert.Contains("does not exist", missing.Stderr);
        string file = Path.Combine(_work.FullName, "file");
        await File.WriteAllTextAsync(file, "x");
        var notDir = await Mlfs("mount", "--manifest", manifest, "--cache-dir", Path.Combine(_work.FullName, "c"), file);
        Assert.Equal(ExitCodes.MountError, notDir.ExitCode);
        Assert.Contains("is not a directory", notDir.Stderr);
        var badManifest = Path.Combine(_work.FullName, "bad.json");
        await File.WriteAllTextAsync(badManifest, "{\"artifact_id\": \"x\", \"version\": \"v\", \"files\": [{\"path\": \"../x\", \"url\": \"s3://b/x\", \"size\": 1, \"sha256\": \"00\"}]}");
        var invalid = await Mlfs("mount", "--manifest", badManifest, NewDir("m2"));
        Assert.Equal(ExitCodes.InvalidInput, invalid.ExitCode);
        Assert.Contains("files[0] (\"../x\"): path contains a '..' segment", invalid.Stderr);
    }

    [Fact]
    public async Task KillNineDuringAFetchThenRemountServesOnlyVerifiedBytes()
    {
        _model.Add("weights.bin", 24 << 20, 7);
        string manifest = await _model.PublishAsync(s3, "crash", chunkSize: 1 << 20);
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");

        await using var proxy = new FaultProxy(s3.Endpoint) { PauseAfter = 5 << 20 }; // bodies hang after 5 MiB
        var first = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment(endpoint: proxy.Endpoint));
        var reader = Task.Run(() =>
        {
            try { return File.ReadAllBytes(Path.Combine(mountPoint, "weights.bin")).Length; }
            catch (IOException) { return -1; }
        });
        await proxy.Paused.Task.WaitAsync(TimeSpan.FromSeconds(60));
        first.Process.Kill(); // SIGKILL mid-fetch: no unmount, a dead mount is left behind
        await first.Process.WaitForExitAsync();
        await reader.WaitAsync(TimeSpan.FromSeconds(60));
        await first.DisposeAsync();
        proxy.Release.SetResult();

        // The remount finds the dead mount, clears it, and serves the model from the partly filled cache.
        await using var second = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(Path.Combine(mountPoint, "weights.bin")), "file");
        Assert.Equal(0, Repo.Signal(second.Process.Id, "INT"));
        await second.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, second.Process.ExitCode);
    }

    [Fact]
    public async Task HelpWorksForEveryCommand()
    {
        foreach (var command in new[] { "generate", "push", "mount", "status", "switch", "unmount", "cache" })
        {
            var help = await Mlfs(command, "--help");
            Assert.Equal(0, help.ExitCode);
            Assert.Contains("Usage:", help.Stdout);
        }
        var bad = await Mlfs("mount", "--no-such-option");
        Assert.Equal(ExitCodes.InvalidInput, bad.ExitCode);
    }

    [Fact]
    public async Task OperationalErrorsAreOneClearLineWithTheirExitCode()
    {
        _model.Add("config.json", 100, 8);
        string manifest = await _model.PublishAsync(s3, "ops", prefetch: ["config.json"]);
        string cache = Path.Combine(_work.FullName, "cache");

        // S3 unreachable: nothing listens on the endpoint.
        var unreachable = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", manifest, "--cache-dir", cache, "--max-attempts", "1", NewDir("m1")],
            s3.Environment(endpoint: "http://127.0.0.1:9"));
        Assert.Equal(ExitCodes.StorageError, unreachable.ExitCode);
        Assert.Contains("connection failed (ConnectionRefused)", unreachable.Stderr);

        // Already mounted: a second mount on a busy mount point is refused.
        string busy = NewDir("busy");
        await using (var first = await StartMountAsync(manifest, busy, cache, s3.Environment()))
        {
            var second = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", manifest, "--cache-dir", cache, busy], s3.Environment());
            Assert.Equal(ExitCodes.MountError, second.ExitCode);
            Assert.Contains("is busy: a FUSE file system (fuse.mlfs) is already mounted there", second.Stderr);
        }

        // Redis unreachable at start: a warning, and the mount works.
        string withRedis = NewDir("redis");
        await using (var mount = await StartMountAsync(manifest, withRedis, cache, s3.Environment(), true, "--redis", "127.0.0.1:9"))
        {
            Assert.Equal(_model.Files["config.json"], await File.ReadAllBytesAsync(Path.Combine(withRedis, "config.json")));
            Assert.Contains("Redis 127.0.0.1:9 is unreachable", mount.Stderr);
        }
    }

    [Fact]
    public async Task WithoutRootAndWithoutFusermount3TheMountSaysWhatToInstall()
    {
        _model.Add("a.bin", 10, 9);
        string manifest = await _model.WriteManifestAsync("s3://nowhere/m");
        string mountPoint = NewDir("unprivileged");
        File.SetUnixFileMode(_work.FullName, (UnixFileMode)0x1ED); // 0755: let nobody reach the mount point
        File.SetUnixFileMode(mountPoint, (UnixFileMode)0x1FF);
        string home = NewDir("nobody");
        File.SetUnixFileMode(home, (UnixFileMode)0x1FF);
        File.Copy(manifest, Path.Combine(home, "m.json"));
        manifest = Path.Combine(home, "m.json"); // readable by the unprivileged user
        File.SetUnixFileMode(manifest, (UnixFileMode)0x1A4);
        string cache = Path.Combine(home, "cache"); // created by the unprivileged user itself
        var psi = new[] { "--reuid=65534", "--regid=65534", "--clear-groups", "env", "PATH=/nonexistent", "HOME=/tmp",
            Repo.Mlfs, "mount", "--manifest", manifest, "--cache-dir", cache, mountPoint };
        var result = await Repo.RunAsync("setpriv", psi);
        Assert.True(result.ExitCode == ExitCodes.MountError, $"exit {result.ExitCode}: {result.Stderr}");
        Assert.Contains("not running as root and fusermount3 is not installed", result.Stderr);
    }

    [Fact]
    public async Task RepeatedKillNineAtRandomPointsNeverLeavesAnInconsistentCache()
    {
        const int rounds = 6;
        _model.Add("weights.bin", 16 << 20, 10);
        byte[] expected = _model.Files["weights.bin"];
        string manifest = await _model.PublishAsync(s3, "crashes", chunkSize: 1 << 20);
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        string file = Path.Combine(mountPoint, "weights.bin");
        var random = new Random(7);
        long served = 0, wrong = 0;
        for (int round = 0; round < rounds; round++)
        {
            // Each round reads from a random offset, so it meets chunks cached (whole or in part) by earlier rounds,
            // and every byte it is served before the kill is compared with the model.
            var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
            long start = random.NextInt64(expected.Length);
            // The kill comes after a chosen number of bytes has been served in this round (an event, not a
            // time: a slow machine must not let every kill land before the first byte).
            long killAfter = random.NextInt64(1, Math.Max(2, (expected.Length - start) * 3 / 4));
            var reachedKillPoint = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var reader = Task.Run(() =>
            {
                var buffer = new byte[256 * 1024];
                long roundServed = 0;
                try
                {
                    using var handle = File.OpenHandle(file);
                    for (long offset = start; offset < expected.Length;)
                    {
                        int n = RandomAccess.Read(handle, buffer, offset);
                        if (n == 0) break;
                        for (int i = 0; i < n; i++) if (buffer[i] != expected[offset + i]) Interlocked.Increment(ref wrong);
                        Interlocked.Add(ref served, n);
                        offset += n;
                        if ((roundServed += n) >= killAfter) reachedKillPoint.TrySetResult();
                    }
                }
                catch (IOException) { } // the mount died under the read
                finally { reachedKillPoint.TrySetResult(); } // read to the end first: kill anyway
            });
            await reachedKillPoint.Task.WaitAsync(TimeSpan.FromMinutes(2));
            mount.Process.Kill(); // SIGKILL at that point of the fetch
            await mount.Process.WaitForExitAsync();
            await reader.WaitAsync(TimeSpan.FromSeconds(60));
            await mount.DisposeAsync();
        }
        await using var final = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
        Check.SameBytes(expected, await File.ReadAllBytesAsync(file), $"after {rounds} crashes");
        output.WriteLine($"{rounds} kills: {served} bytes served before them, {wrong} wrong");
        Assert.Equal(0, Interlocked.Read(ref wrong));
        Assert.True(served > 0, "no round read anything before its kill");
    }

    [Fact]
    public async Task UnderSixtyFourReadersTheDaemonsMemoryThreadsAndFdsStayBounded()
    {
        for (int i = 0; i < 16; i++) _model.Add($"shard-{i:D2}.bin", (8 << 20) + i * 4099, 200 + i);
        string manifest = await _model.PublishAsync(s3, "loadproc", chunkSize: 1 << 20);
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        await using var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
        var daemon = new DaemonSampler(mount.Process.Id);
        var before = daemon.Sample();

        using var sampling = new CancellationTokenSource();
        var peak = Task.Run(async () =>
        {
            var max = before;
            while (!sampling.IsCancellationRequested)
            {
                max = DaemonSampler.Max(max, daemon.Sample());
                await Task.Delay(25);
            }
            return max;
        });
        var files = _model.Files.OrderBy(f => f.Key).ToArray();
        long wrong = 0;
        async Task<DaemonSampler.Usage> LoadRoundAsync(int seed)
        {
            var readers = Enumerable.Range(0, 64).Select(r => Task.Run(() =>
            {
                var (path, expected) = files[r % files.Length];
                using var handle = File.OpenHandle(Path.Combine(mountPoint, path));
                var random = new Random(seed * 64 + r);
                var buffer = new byte[1 << 20];
                bool sequential = r % 2 == 0;
                long offset = 0;
                for (int i = 0; sequential ? offset < expected.Length : i < 200; i++)
                {
                    if (!sequential) offset = random.NextInt64(expected.Length);
                    int n = RandomAccess.Read(handle, buffer.AsSpan(0, sequential ? buffer.Length : random.Next(1, buffer.Length)), offset);
                    if (!expected.AsSpan((int)offset, n).SequenceEqual(buffer.AsSpan(0, n))) Interlocked.Increment(ref wrong);
                    offset += n;
                }
            })).ToArray();
            await Task.WhenAll(readers).WaitAsync(TimeSpan.FromMinutes(5));
            // Closed files are released asynchronously: wait for the daemon to have seen every RELEASE (the event,
            // with a one-minute deadline), then for its descriptor count to stop moving, before counting its fds.
            var released = System.Diagnostics.Stopwatch.StartNew();
            while ((await StatusAsync(mountPoint)).GetProperty("open_files").GetInt64() > 0 && released.Elapsed < TimeSpan.FromMinutes(1))
                await Task.Delay(20);
            var settled = daemon.Sample();
            for (int i = 0; i < 40; i++) { await Task.Delay(50); var next = daemon.Sample(); if (next.Fds == settled.Fds) break; settled = next; }
            return settled;
        }
        var afterCold = await LoadRoundAsync(1); // fetches everything
        var targetsCold = daemon.FdTargets();
        var afterWarm = await LoadRoundAsync(2); // served from the cache (passthrough where complete)
        sampling.Cancel();
        var max = await peak;

        output.WriteLine($"daemon: {before.RssBytes >> 20} MiB RSS, {before.Threads} threads, {before.Fds} fds + {before.Sockets} sockets idle; " +
                         $"peak {max.RssBytes >> 20} MiB, {max.Threads} threads, {max.Fds} fds + {max.Sockets} sockets; " +
                         $"fds {afterCold.Fds} after the cold round, {afterWarm.Fds} after the warm one");
        Assert.Equal(0, wrong);
        // The daemon keeps up to 64 idle cache files open for reuse (a bounded pool): fds may rise once, then must not grow.
        var targetsWarm = daemon.FdTargets();
        string grown = string.Join(", ", targetsWarm.Where(t => t.Value > targetsCold.GetValueOrDefault(t.Key)).Select(t => $"{t.Key}: {targetsCold.GetValueOrDefault(t.Key)} -> {t.Value}"));
        Assert.True(afterWarm.Fds <= afterCold.Fds, $"daemon fds: {before.Fds} idle, {afterCold.Fds} after a cold round, {afterWarm.Fds} after a warm one; grown: {grown}");
        Assert.True(afterCold.Fds <= before.Fds + 4 * files.Length, $"daemon fds: {before.Fds} idle, {afterCold.Fds} after a cold round of {files.Length} files");
        Assert.True(max.RssBytes <= 256L << 20, $"daemon peak RSS {max.RssBytes >> 20} MiB under load (bound 256 MiB)");
        Assert.True(max.Threads <= before.Threads + 40, $"daemon threads: {before.Threads} idle, {max.Threads} at peak");
        Assert.True(max.Sockets <= before.Sockets + 32, $"daemon sockets: {before.Sockets} idle, {max.Sockets} at peak (the S3 connection pool holds at most 32)");
        Assert.False(mount.Process.HasExited);
    }

    /// <summary>RSS, threads and open fds of a process, from /proc.</summary>
    private sealed class DaemonSampler(int pid)
    {
        /// <summary>Fds counts files, pipes and devices (not assemblies); Sockets the S3 connections (a pool that may grow to its limit) and the control socket.</summary>
        public readonly record struct Usage(long RssBytes, int Threads, int Fds, int Sockets);

        /// <summary>The JIT-compiled test build opens assemblies as it first uses them (the AOT build has none): not a leak.</summary>
        private static bool IsAssembly(string target) => target.EndsWith(".dll", StringComparison.Ordinal);

        /// <summary>What each open fd points at; an fd closed while we look is skipped.</summary>
        private IEnumerable<string> LinkTargets() =>
            Directory.GetFileSystemEntries($"/proc/{pid}/fd").Select(fd => { try { return new FileInfo(fd).LinkTarget ?? "?"; } catch (IOException) { return null; } })
                .OfType<string>();

        private static bool IsSocket(string target) => target.StartsWith("socket:", StringComparison.Ordinal);

        /// <summary>The non-socket fds per target, numbers folded (for a failure message).</summary>
        public Dictionary<string, int> FdTargets() =>
            LinkTargets().Where(t => !IsSocket(t) && !IsAssembly(t))
                .Select(t => System.Text.RegularExpressions.Regex.Replace(t, @"\[\d+\]|[0-9a-f]{64}", "#"))
                .GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());

        public Usage Sample()
        {
            long rss = 0;
            int threads = 0;
            foreach (string line in File.ReadLines($"/proc/{pid}/status"))
            {
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture) * 1024;
                if (line.StartsWith("Threads:", StringComparison.Ordinal)) threads = int.Parse(line.Split('\t', ' ').Last(), System.Globalization.CultureInfo.InvariantCulture);
            }
            var targets = LinkTargets().ToList();
            return new Usage(rss, threads, targets.Count(t => !IsSocket(t) && !IsAssembly(t)), targets.Count(IsSocket));
        }

        public static Usage Max(Usage a, Usage b) =>
            new(Math.Max(a.RssBytes, b.RssBytes), Math.Max(a.Threads, b.Threads), Math.Max(a.Fds, b.Fds), Math.Max(a.Sockets, b.Sockets));
    }

    [Fact]
    public async Task WithoutDevFuseTheMountSaysHowToGetIt()
    {
        _model.Add("a.bin", 10, 11);
        string manifest = await _model.WriteManifestAsync("s3://nowhere/m");
        string mountPoint = NewDir("nofuse");
        // A private mount namespace whose /dev has everything a process needs except fuse (as in a container run without --device /dev/fuse).
        string script = "mount -t tmpfs nodev /dev && mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/zero c 1 5 && mknod -m 666 /dev/urandom c 1 9 && " +
                        $"exec '{Repo.Mlfs}' mount --manifest '{manifest}' --cache-dir '{Path.Combine(_work.FullName, "cache")}' '{mountPoint}'";
        var result = await Repo.RunAsync("unshare", ["--mount", "--propagation", "private", "sh", "-c", script]);
        Assert.Equal(ExitCodes.MountError, result.ExitCode);
        Assert.Contains("/dev/fuse is missing", result.Stderr);
        Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.Contains("/dev/fuse", StringComparison.Ordinal));
    }

    [Fact]
    public async Task CacheClearKeepsWhatARunningMountHoldsAndEmptiesTheRest()
    {
        _model.Add("a.bin", 3 << 20, 11).Add("b.bin", 1 << 20, 12);
        string manifest = await _model.PublishAsync(s3, "cachecmd");
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        await using (var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment()))
        {
            foreach (var (path, bytes) in _model.Files)
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mountPoint, path)), path);
            var kept = await Mlfs("cache", "clear", "--cache-dir", cacheDir);
            Assert.Equal(0, kept.ExitCode);
            Assert.Contains("removed 0 blob(s); kept 2 in use by a running mount", kept.Stdout);
            Assert.Equal(0, Repo.Signal(mount.Process.Id, "TERM"));
            await mount.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
        var info = await Mlfs("cache", "info", "--cache-dir", cacheDir);
        Assert.Contains("blobs: 2, 4 MiB on disk", info.Stdout);
        var cleared = await Mlfs("cache", "clear", "--cache-dir", cacheDir);
        Assert.Contains("removed 2 blob(s)", cleared.Stdout);
        Assert.Contains("blobs: 0", (await Mlfs("cache", "info", "--cache-dir", cacheDir)).Stdout);
    }
}
