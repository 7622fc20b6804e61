using System.Diagnostics;
using Mlfs.Tests.Infrastructure;
using MlArtifactFs.Fuse;

namespace Mlfs.Tests;

/// <summary>The `mlfs` executable as users run it: the seed's workflow, exit codes, crash recovery.</summary>
[Collection(S3Collection.Name)]
public sealed class ProcessTests(S3Fixture s3) : IDisposable
{
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-proc-");
    private readonly TestModel _model = new();

    public void Dispose()
    {
        _model.Dispose();
        foreach (var dir in _work.EnumerateDirectories())
            if (FuseMounter.IsMountPoint(dir.FullName)) FuseMounter.TryUnmount(dir.FullName, lazy: true);
        _work.Delete(recursive: true);
    }

    private string NewDir(string name) => _work.CreateSubdirectory(name).FullName;

    private Task<MountProcess> StartMountAsync(string manifest, string mountPoint, string cacheDir, Dictionary<string, string?> env,
        bool waitReady = true, params string[] extra) =>
        MountProcess.StartAsync(_work.FullName, manifest, mountPoint, cacheDir, env, waitReady, extra);

    private static async Task<Repo.Result> Mlfs(params string[] args) => await Repo.RunAsync(Repo.Mlfs, args);

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
        Assert.Equal(0, Kill(mount.Process.Id, "TERM"));
        await mount.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, mount.Process.ExitCode);
        Assert.False(FuseMounter.IsMountPoint(mountPoint));
        Assert.DoesNotContain(s3.SecretKey, mount.Stdout + mount.Stderr);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(cacheDir));
    }

    private static int Kill(int pid, string signal)
    {
        using var p = Process.Start("kill", ["-" + signal, pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!;
        p.WaitForExit();
        return p.ExitCode;
    }

    [Fact]
    public async Task WrongCredentialsExitWithTheStorageCodeAndNeverPrintTheSecret()
    {
        _model.Add("config.json", 100, 5);
        string bucket = await s3.CreateBucketAsync("cred");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m", prefetch: ["config.json"]);
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
        string bucket = await s3.CreateBucketAsync("crash");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m", chunkSize: 1 << 20);
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
        Assert.Equal(0, Kill(second.Process.Id, "INT"));
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
        string bucket = await s3.CreateBucketAsync("ops");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m", prefetch: ["config.json"]);
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
            Assert.Contains("is busy: something is already mounted there", second.Stderr);
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
        Assert.Equal(ExitCodes.MountError, result.ExitCode);
        Assert.Contains("not running as root and fusermount3 is not installed", result.Stderr);
    }

    [Fact]
    public async Task RepeatedKillNineAtRandomPointsNeverLeavesAnInconsistentCache()
    {
        _model.Add("weights.bin", 16 << 20, 10);
        string bucket = await s3.CreateBucketAsync("crashes");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m", chunkSize: 1 << 20);
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        var random = new Random(7);
        for (int round = 0; round < 3; round++)
        {
            var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
            var reader = Task.Run(() => { try { File.ReadAllBytes(Path.Combine(mountPoint, "weights.bin")); } catch (IOException) { } });
            await Task.Delay(random.Next(5, 120));
            mount.Process.Kill(); // SIGKILL at a random point of the fetch
            await mount.Process.WaitForExitAsync();
            await reader.WaitAsync(TimeSpan.FromSeconds(60));
            await mount.DisposeAsync();
        }
        await using var final = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment());
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(Path.Combine(mountPoint, "weights.bin")), "after three crashes");
    }

    [Fact]
    public async Task CacheClearKeepsWhatARunningMountHoldsAndEmptiesTheRest()
    {
        _model.Add("a.bin", 3 << 20, 11).Add("b.bin", 1 << 20, 12);
        string bucket = await s3.CreateBucketAsync("cachecmd");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string manifest = await _model.WriteManifestAsync($"s3://{bucket}/m");
        string mountPoint = NewDir("mnt"), cacheDir = Path.Combine(_work.FullName, "cache");
        await using (var mount = await StartMountAsync(manifest, mountPoint, cacheDir, s3.Environment()))
        {
            foreach (var (path, bytes) in _model.Files)
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mountPoint, path)), path);
            var kept = await Mlfs("cache", "clear", "--cache-dir", cacheDir);
            Assert.Equal(0, kept.ExitCode);
            Assert.Contains("removed 0 blob(s); kept 2 in use by a running mount", kept.Stdout);
            Assert.Equal(0, Kill(mount.Process.Id, "TERM"));
            await mount.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
        var info = await Mlfs("cache", "info", "--cache-dir", cacheDir);
        Assert.Contains("blobs: 2, 4 MiB on disk", info.Stdout);
        var cleared = await Mlfs("cache", "clear", "--cache-dir", cacheDir);
        Assert.Contains("removed 2 blob(s)", cleared.Stdout);
        Assert.Contains("blobs: 0", (await Mlfs("cache", "info", "--cache-dir", cacheDir)).Stdout);
    }
}
