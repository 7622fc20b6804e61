using System.Diagnostics;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fleet;
using MlArtifactFs.Fuse;
using MlArtifactFs.Index;
using MlArtifactFs.Manifest;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Mounting;

/// <summary>
/// A running mount of a model: loads the manifest, opens the cache, prefetches the manifest's
/// `prefetch` files (a failure there refuses the mount: wrong credentials and missing objects show
/// up before anyone reads), mounts FUSE, serves the control socket, and on dispose unmounts and
/// closes everything in the reverse order.
/// </summary>
public sealed class ModelMount : IAsyncDisposable
{
    private readonly ILogger _logger;
    private readonly S3Settings _s3;
    private readonly HttpObjectStore _store;
    private readonly Lock _switchLock = new();
    private ulong _nextNodeId;
    private FuseSession? _session;
    private ControlServer? _control;
    private CancellationTokenSource? _background;
    private Task _backgroundWork = Task.CompletedTask;

    private ModelMount(MountOptions options, S3Settings s3, ILogger logger)
    {
        Options = options;
        _s3 = s3;
        _logger = logger;
        _store = new HttpObjectStore(s3, options.Fetcher.MaxConcurrentFetches * 2); // room for a waited-on chunk's parts beside the streams
        Stats = new CounterSet();
        Cache = new BlobCache(options.CacheDirectory ?? BlobCache.DefaultRoot(), options.CacheSize, logger);
        Index = string.IsNullOrWhiteSpace(options.Redis) ? new LocalChunkIndex() : RedisChunkIndex.Connect(options.Redis, Cache.Root, logger);
        if (options.Fleet is { } fleet)
        {
            if (Index is not RedisChunkIndex redis)
                throw new ArgumentException("fleet mode (--peer-listen) needs --redis: Redis is the index of which node holds which chunk");
            try { Fleet = new FleetMember(fleet, redis.Connection, Cache, logger); }
            catch
            {
                Index.Dispose();
                Cache.Dispose();
                throw;
            }
        }
        Fetch = FetchPath.Compose(_store, Cache, options.Fetcher, Stats, logger, Index, Fleet);
        Cache.ChunkEvicted += (_, _, freed) =>
        {
            Stats.Increment(Counters.ChunksEvicted);
            Stats.Add(Counters.BytesEvicted, freed);
        };
        Cache.BlobEvicted += (_, freed) =>
        {
            Stats.Increment(Counters.BlobsEvicted);
            Stats.Add(Counters.BytesEvicted, freed);
        };
        MlfsTelemetry.CacheBytesProvider = () => Cache.UsedBytes;
    }

    public MountOptions Options { get; }
    public BlobCache Cache { get; }
    /// <summary>The scheduler, the chain of chunk sources and the sink (see <see cref="FetchPath"/>).</summary>
    public FetchPath Fetch { get; }
    public ChunkFetcher Fetcher => Fetch.Fetcher;
    public IChunkIndex Index { get; }
    /// <summary>Fleet mode's peer server, holder index and peer client; null without --peer-listen.</summary>
    public FleetMember? Fleet { get; }
    /// <summary>This mount's counters: what `mlfs status` shows and the Meter exports.</summary>
    public CounterSet Stats { get; }
    public ModelFileSystem FileSystem { get; private set; } = null!;
    public FuseSession Session => _session!;
    public Task Completion => _session?.Completion ?? Task.CompletedTask;

    /// <summary>Loads, prefetches and mounts. Throws with a clear message when any step cannot be done.</summary>
    public static async Task<ModelMount> StartAsync(MountOptions options, ILogger logger, CancellationToken cancel = default)
    {
        long loadStarted = Stopwatch.GetTimestamp();
        var s3 = options.S3 ?? S3Settings.FromEnvironment(options.Endpoint);
        LoadedManifest loadedManifest;
        using (MlfsTelemetry.Source.StartActivity("mlfs.mount.load_manifest"))
        using (var manifestStore = ManifestSource.IsRemote(options.ManifestPath) ? new HttpObjectStore(s3, 2) : null)
        {
            loadedManifest = await ManifestSource.LoadAsync(options.ManifestPath, options.VerifyKeys, manifestStore, s3, options.MaxManifestBytes, cancel)
                .ConfigureAwait(false);
        }
        var manifest = loadedManifest.Manifest;
        var loaded = Stopwatch.GetElapsedTime(loadStarted);

        var mount = new ModelMount(options, s3, logger) { SignedBy = loadedManifest.SignedBy };
        try
        {
            var tree = mount.BuildTree(manifest);
            logger.LogDebug("manifest: {Files} files loaded in {LoadMs:F0} ms, tree of {Nodes} nodes built in {TreeMs:F0} ms",
                tree.FileCount, loaded.TotalMilliseconds, tree.Count, (Stopwatch.GetElapsedTime(loadStarted) - loaded).TotalMilliseconds);
            manifest.Files = null; // the tree has what it needs of them
            ReleaseLoadingMemory(loadedManifest.Bytes);
            mount.FileSystem = new ModelFileSystem(tree, mount.Cache, mount.Fetch, mount.Stats, logger)
            {
                UsePassthrough = options.Passthrough,
            };
            // Check the mount point before spending time on prefetch.
            FuseMounter.CheckMountPoint(Path.GetFullPath(options.MountPoint));

            using (var prefetch = MlfsTelemetry.Source.StartActivity("mlfs.mount.prefetch"))
            {
                prefetch?.SetTag("mlfs.files", manifest.Prefetch?.Count ?? 0);
                await mount.PrefetchAsync(tree, manifest.Prefetch ?? [], cancel).ConfigureAwait(false);
            }

            using (MlfsTelemetry.Source.StartActivity("mlfs.mount.fuse"))
            using (ExecutionContext.SuppressFlow()) // the session's threads must not take this span as every read's parent
            {
                mount._session = FuseSession.Mount(mount.FileSystem, new FuseMountOptions
                {
                    MountPoint = options.MountPoint,
                    FsName = $"mlfs:{manifest.ArtifactId}",
                    AllowOther = options.AllowOther,
                    ReadAheadKb = options.ReadAheadKb,
                    EnablePassthrough = options.Passthrough,
                    MaxRead = 1 << 20,
                }, logger);
            }
            mount._control = ControlServer.TryStart(options.ControlSocket ?? ControlServer.DefaultPath(options.MountPoint), mount, logger);
            mount._background = new CancellationTokenSource();
            mount.CachedFilesChecked = mount.CheckCachedFilesAsync(mount._background.Token);
            mount._backgroundWork = options.PrefetchAll
                ? Task.WhenAll(mount.CachedFilesChecked, mount.PrefetchAllAsync(mount._background.Token))
                : mount.CachedFilesChecked;
            return mount;
        }
        catch
        {
            await mount.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Hint of the key that signed the manifest being served; null when it was not checked (no --verify-key).</summary>
    public string? SignedBy { get; private set; }

    /// <summary>
    /// A large manifest leaves a large heap of garbage behind (its text read in pieces, growing lists): the
    /// daemon runs for days, so it is collected and given back to the system once, now, rather than kept.
    /// </summary>
    private static void ReleaseLoadingMemory(long manifestBytes)
    {
        if (manifestBytes < 4L << 20) return;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    private FileTree BuildTree(ModelManifest manifest)
    {
        lock (_switchLock)
        {
            // Ids: 1 is the FUSE root; each tree takes a fresh range so ids are never reused in a mount.
            ulong first = _nextNodeId == 0 ? 2 : _nextNodeId;
            var tree = FileTree.Build(manifest, _s3, first);
            _nextNodeId = first + (ulong)tree.Count;
            return tree;
        }
    }

    private async Task PrefetchAsync(FileTree tree, IEnumerable<string> paths, CancellationToken cancel)
    {
        var started = Stopwatch.GetTimestamp();
        var files = paths.Select(p => tree.FindPath(p)?.File ?? throw new InvalidOperationException($"prefetch names {p}, which is not in the tree")).ToList();
        var failures = new List<string>();
        bool accessDenied = false;
        var phase = Activity.Current; // the mount's or a switch's prefetch step
        await Parallel.ForEachAsync(files, new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancel }, async (file, ct) =>
        {
            // Each file is a short trace of its own (its fetch, GETs and verification under it), linked to the step.
            using var span = MlfsTelemetry.StartDetached("mlfs.prefetch", default);
            if (span is not null)
            {
                span.SetTag("mlfs.file", file.Path);
                span.SetTag("mlfs.offset", 0L);
                span.SetTag("mlfs.length", file.Size);
                if (phase is not null) span.AddLink(new ActivityLink(phase.Context));
                Activity.Current = span;
            }
            var blob = file.OpenBlob(Cache);
            Fetch.Checks.Register(blob);
            try
            {
                await Fetcher.EnsureAsync(blob, file.Location, file.Path, 0, file.Size, FetchPriority.Demand, ct).ConfigureAwait(false);
                if (!blob.Descriptor.HasChunkHashes && file.Size > 0)
                {
                    // Seed manifests: a prefetched file is verified whole before the mount is ready.
                    await WaitForWholeVerificationAsync(blob, ct).ConfigureAwait(false);
                }
            }
            catch (Exception e) when (e is IOException or ChunkVerificationException or ObjectStoreException)
            {
                lock (failures) failures.Add($"{file.Path}: {e.Message}");
                if ((e as ObjectStoreException ?? e.InnerException as ObjectStoreException)?.Kind == ObjectStoreErrorKind.AccessDenied)
                    Volatile.Write(ref accessDenied, true);
            }
            finally
            {
                Cache.Release(blob);
            }
        }).ConfigureAwait(false);
        if (failures.Count > 0)
            throw new MountException("prefetch failed, not mounting:\n  " + string.Join("\n  ", failures.Order(StringComparer.Ordinal)), accessDenied);
        _logger.LogInformation("prefetched {Count} file(s) in {Ms} ms", files.Count, (int)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    private static Task WaitForWholeVerificationAsync(CachedBlob blob, CancellationToken cancel) =>
        blob.WholeVerified.WaitAsync(cancel); // faults when the check fails or cannot run: never waits forever

    /// <summary>Completes when the files an earlier run cached whole have been checked (see <see cref="CheckCachedFilesAsync"/>).</summary>
    public Task CachedFilesChecked { get; private set; } = Task.CompletedTask;

    /// <summary>
    /// After a restart, chunks recorded by the earlier run are trusted only once their bytes match the
    /// recorded digest. Files cached whole are checked here, one at a time in the background, so their
    /// first open can use passthrough instead of checking chunk by chunk on the read path.
    /// </summary>
    private async Task CheckCachedFilesAsync(CancellationToken cancel)
    {
        await Task.Yield(); // not on the mount's start path
        long started = Stopwatch.GetTimestamp();
        int checkedFiles = 0;
        foreach (var file in FileSystem.Current.Files.Select(n => n.File!))
        {
            if (cancel.IsCancellationRequested) return;
            if (!Cache.HasCached(file.Blob)) continue; // never cached: nothing to check, and no file to create
            CachedBlob blob;
            try { blob = file.OpenBlob(Cache); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { continue; } // its first open will say why
            try { await Fetch.Checks.ScrubAsync(blob, file.Path, cancel).ConfigureAwait(false); }
            finally { Cache.Release(blob); }
            checkedFiles++;
        }
        if (checkedFiles > 0)
            _logger.LogInformation("checked {Count} file(s) cached by an earlier run in {Ms:F0} ms", checkedFiles, Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>--prefetch-all: every file, smallest first, at background priority (reads go first).</summary>
    private async Task PrefetchAllAsync(CancellationToken cancel)
    {
        var files = FileSystem.Current.Files.Select(n => n.File!).OrderBy(f => f.Size).ToList();
        try
        {
            await Parallel.ForEachAsync(files, new ParallelOptions { MaxDegreeOfParallelism = 2, CancellationToken = cancel }, async (file, ct) =>
            {
                CachedBlob? blob = null;
                try
                {
                    blob = file.OpenBlob(Cache);
                    await Fetcher.EnsureAsync(blob, file.Location, file.Path, 0, file.Size, FetchPriority.Background, ct).ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _logger.LogWarning("background prefetch of {File} failed: {Error}", file.Path, e.Message); // one file's failure stops nothing else
                }
                finally
                {
                    if (blob is not null) Cache.Release(blob);
                }
            }).ConfigureAwait(false);
            _logger.LogInformation("prefetch-all done: {Count} file(s) cached", files.Count);
        }
        catch (OperationCanceledException) { }
    }

    /// <summary>One switch at a time: two at once would race on which tree ends up current.</summary>
    private readonly SemaphoreSlim _switching = new(1, 1);

    /// <summary>Hot version switch: new opens see <paramref name="manifestPath"/>'s tree (a path or an s3:// or http(s) URL); open files keep their version.</summary>
    public async Task<SwitchResult> SwitchAsync(string manifestPath, CancellationToken cancel = default)
    {
        await _switching.WaitAsync(cancel).ConfigureAwait(false);
        try { return await SwitchLockedAsync(manifestPath, cancel).ConfigureAwait(false); }
        finally { _switching.Release(); }
    }

    private async Task<SwitchResult> SwitchLockedAsync(string manifestPath, CancellationToken cancel)
    {
        using var activity = MlfsTelemetry.Source.StartActivity("mlfs.switch");
        var started = Stopwatch.GetTimestamp();
        long bytesBefore = Stats[Counters.BytesFetched];
        var (manifest, signedBy, manifestBytes) = await ManifestSource.LoadAsync(manifestPath, Options.VerifyKeys, _store, _s3, Options.MaxManifestBytes, cancel)
            .ConfigureAwait(false);
        var tree = BuildTree(manifest);
        manifest.Files = null;
        ReleaseLoadingMemory(manifestBytes);
        await PrefetchAsync(tree, manifest.Prefetch ?? [], cancel).ConfigureAwait(false);
        FileSystem.Switch(tree);
        SignedBy = signedBy;
        var result = new SwitchResult(manifest.ArtifactId!, manifest.Version!, Stopwatch.GetElapsedTime(started),
            Stats[Counters.BytesFetched] - bytesBefore);
        _logger.LogInformation("switched to {Artifact} {Version} in {Ms} ms ({Bytes} bytes fetched for prefetch)",
            result.ArtifactId, result.Version, (int)result.Elapsed.TotalMilliseconds, result.BytesFetched);
        return result;
    }

    public MountStatus GetStatus()
    {
        var tree = FileSystem.Current;
        var (blobs, bytes) = Cache.Usage();
        return new MountStatus
        {
            MountPoint = Path.GetFullPath(Options.MountPoint),
            ArtifactId = tree.ArtifactId,
            Version = tree.Version,
            Files = tree.FileCount,
            TotalBytes = tree.TotalBytes,
            CacheDirectory = Cache.Root,
            CacheBlobs = blobs,
            CacheBytes = bytes,
            CacheCapacity = Cache.Capacity,
            CacheBound = Cache.Bound,
            HitRatio = Stats.HitRatio,
            DaemonOpenShare = Stats.DaemonOpenShare,
            OpenFiles = FileSystem.OpenHandles,
            Passthrough = _session?.PassthroughEnabled ?? false,
            SplicedReads = _session?.SplicedReads ?? 0,
            ChunkIndex = Index.Describe(),
            IgnoredIndexEntries = Index.IgnoredEntries + Interlocked.Read(ref Cache.IgnoredIndexEntries),
            DamagedChunksDropped = Interlocked.Read(ref Cache.DamagedChunks),
            Errors = Stats.Errors().ToDictionary(),
            Fleet = Fleet?.Status(),
            SignedBy = SignedBy,
            Counters = MountStatus.FromCounters(Stats),
        };
    }

    public async ValueTask DisposeAsync()
    {
        _background?.Cancel();
        // Unmount first: a supervisor (systemd, Kubernetes, Aspire's DCP) kills a process that takes more than a
        // few seconds to stop, and a killed FUSE daemon leaves a dead mount point behind. Nothing below needs it.
        _control?.Dispose();
        _session?.Dispose();   // unmounts; pending reads get an error
        // Background checks and prefetch stop at their next chunk; let them before the cache closes under them.
        try { await _backgroundWork.WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false); }
        catch (Exception e) when (e is OperationCanceledException or TimeoutException) { }
        catch (Exception e) { _logger.LogWarning("background work ended with {Type}: {Error}", e.GetType().Name, e.Message); }
        await Fetcher.StopAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false); // verified chunks in flight land on disk
        Fetch.Dispose();
        if (Fleet is not null) await Fleet.DisposeAsync().ConfigureAwait(false);
        if (FileSystem is not null) FileSystem.Dispose();
        Cache.Dispose();
        Index.Dispose();
        _store.Dispose();
        _background?.Dispose();
        Stats.Dispose();
    }
}

public sealed record SwitchResult(string ArtifactId, string Version, TimeSpan Elapsed, long BytesFetched);

/// <summary>A mount that cannot start; the message is for the user.</summary>
public sealed class MountException(string message, bool accessDenied = false) : Exception(message)
{
    /// <summary>Storage answered 401/403: credentials or permissions, not the mount.</summary>
    public bool AccessDenied { get; } = accessDenied;
}
