using System.CommandLine;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Manifest;
using MlArtifactFs.Mounting;
using MlArtifactFs.ServiceDefaults;
using MlArtifactFs.Storage;

namespace Mlfs.Commands;

/// <summary>`mlfs mount`: serve a manifest's tree at a mount point until unmounted or signalled.</summary>
internal static class MountCommand
{
    public static readonly Option<string> Manifest = new("--manifest", "-m")
    {
        Description = "the manifest to mount: a file, s3://bucket/key or an http(s) URL (fetched with the same credentials and endpoint as the model)",
        Required = true,
    };
    public static readonly Option<string> MaxManifestSize = new("--max-manifest-size")
    {
        Description = "refuse a manifest (at mount or switch) larger than this", DefaultValueFactory = _ => "512M",
    };
    public static readonly Option<string?> CacheDir = new("--cache-dir") { Description = "cache directory (default $XDG_CACHE_HOME/mlfs, /var/cache/mlfs as root)" };
    public static readonly Option<string> CacheSize = new("--cache-size") { Description = "bound on cache disk use (e.g. 50G)", DefaultValueFactory = _ => "50G" };
    public static readonly Option<string?> Endpoint = new("--endpoint") { Description = "S3-compatible endpoint (MinIO, ...); default AWS_ENDPOINT_URL" };
    public static readonly Option<string> LogLevel = new("--log-level") { Description = "trace, debug, info, warning or error", DefaultValueFactory = _ => "info" };
    public static readonly Option<bool> PrefetchAll = new("--prefetch-all") { Description = "fetch every file in the background (reads go first)" };
    public static readonly Option<bool> AllowOther = new("--allow-other") { Description = "let other users read the mount" };
    public static readonly Option<bool> NoPassthrough = new("--no-passthrough") { Description = "never use FUSE passthrough for cached files" };
    public static readonly Option<int> ReadAheadKb = new("--read-ahead-kb") { Description = "kernel read-ahead of the mount in KiB", DefaultValueFactory = _ => 8192 };
    public static readonly Option<int> MaxConnections = new("--max-connections") { Description = "ranged GETs in flight at once", DefaultValueFactory = _ => 16 };
    public static readonly Option<int> DemandParts = new("--demand-parts")
    {
        Description = "parallel GETs for a cold chunk a reader waits on; 0 (the default): as many as the link measured so far calls for",
        DefaultValueFactory = _ => 0,
    };
    public static readonly Option<int> StallTimeout = new("--stall-timeout") { Description = "seconds without data before a GET is retried", DefaultValueFactory = _ => 30 };
    public static readonly Option<int> MaxAttempts = new("--max-attempts") { Description = "attempts per GET before reads get EIO", DefaultValueFactory = _ => 6 };
    public static readonly Option<string?> Redis = new("--redis")
    {
        Description = "Redis for the shared chunk index (host:port[,options]); default MLFS_REDIS or ConnectionStrings__redis; none = in-process",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("MLFS_REDIS") ?? Environment.GetEnvironmentVariable("ConnectionStrings__redis"),
    };
    public static readonly Option<string?> PeerListen = new("--peer-listen")
    {
        Description = "fleet mode: serve this node's verified chunks to other mounts at ADDR:PORT, and fetch cold chunks from them first (needs --redis and a token)",
    };
    public static readonly Option<string?> PeerAdvertise = new("--peer-advertise") { Description = "fleet mode: the ADDR:PORT other nodes reach this one at (default: --peer-listen)" };
    public static readonly Option<string?> PeerTokenFile = new("--peer-token-file")
    {
        Description = "fleet mode: file holding the fleet's shared token (default: the MLFS_PEER_TOKEN environment variable)",
    };
    public static readonly Option<double> PeerWait = new("--peer-wait")
    {
        Description = "fleet mode: seconds to wait for the node fetching a chunk from storage before fetching it too",
        DefaultValueFactory = _ => 5,
    };

    /// <summary>Fleet options from the command line; null without --peer-listen. Throws ArgumentException naming the bad option.</summary>
    internal static MlArtifactFs.Fleet.FleetOptions? ParseFleet(ParseResult parse)
    {
        if (parse.GetValue(PeerListen) is not { } listenText) return null;
        var listen = MlArtifactFs.Fleet.FleetOptions.ParseEndPoint(listenText, "--peer-listen");
        var advertise = parse.GetValue(PeerAdvertise) is { } advertiseText
            ? MlArtifactFs.Fleet.FleetOptions.ParseEndPoint(advertiseText, "--peer-advertise")
            : listen;
        if (advertise.Address.Equals(System.Net.IPAddress.Any) || advertise.Address.Equals(System.Net.IPAddress.IPv6Any))
            throw new ArgumentException($"--peer-listen {listenText} listens on every address: say which one other nodes reach with --peer-advertise ADDR:PORT");
        string? token;
        if (parse.GetValue(PeerTokenFile) is { } tokenFile)
        {
            try { token = File.ReadAllText(tokenFile).Trim(); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ArgumentException($"--peer-token-file {tokenFile}: {e.Message}");
            }
        }
        else token = Environment.GetEnvironmentVariable("MLFS_PEER_TOKEN")?.Trim();
        if (string.IsNullOrEmpty(token))
            throw new ArgumentException("fleet mode needs the fleet's token: --peer-token-file PATH or MLFS_PEER_TOKEN");
        if (token.Length < MlArtifactFs.Fleet.FleetOptions.MinTokenLength || token.Any(char.IsControl))
            throw new ArgumentException($"the fleet token must be at least {MlArtifactFs.Fleet.FleetOptions.MinTokenLength} printable characters (e.g. openssl rand -hex 32)");
        double wait = parse.GetValue(PeerWait);
        if (!(wait > 0 && wait <= 300)) throw new ArgumentException($"--peer-wait {wait}: give seconds between 0 and 300");
        return new MlArtifactFs.Fleet.FleetOptions { Listen = listen, Advertise = advertise, Token = token, PeerWait = TimeSpan.FromSeconds(wait) };
    }

    /// <summary>
    /// Writes the ready file without following or reusing anything at its path: a fresh temporary
    /// (O_CREAT|O_EXCL|O_NOFOLLOW) in the same directory, renamed over the name. A link planted there is
    /// replaced, never written through (the mount often runs as root, and the path may be under /tmp).
    /// </summary>
    private static void WriteReadyFile(string path, string text)
    {
        string full = Path.GetFullPath(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        int fd = Libc.Open(tmp, 1 /* O_WRONLY */ | 0x40 /* O_CREAT */ | 0x80 /* O_EXCL */ | 0x20000 /* O_NOFOLLOW */ | Libc.O_CLOEXEC, 0x1A4 /* 0644 */);
        if (fd < 0) throw new IOException($"cannot create the ready file next to {full}: {Libc.StrError(Libc.LastErrno)}");
        try
        {
            using (var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true))
                RandomAccess.Write(handle, System.Text.Encoding.UTF8.GetBytes(text), 0);
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    public static readonly Option<string[]> VerifyKey = new("--verify-key")
    {
        Description = "a publisher's ECDSA P-256 public key (PEM); repeatable (key rotation). With any, the manifest and every switch must carry MANIFEST.sig signed by one of them",
        AllowMultipleArgumentsPerToken = false,
    };
    public static readonly Option<string?> ReadyFile = new("--ready-file") { Description = "write this file when the mount is ready" };
    public static readonly Argument<string> MountPoint = new("MOUNTPOINT") { Description = "an empty directory" };

    public static Command Create()
    {
        var command = new Command("mount", "Mount a manifest read-only; files are fetched lazily in verified chunks and cached on disk.")
        {
            Manifest, MaxManifestSize, CacheDir, CacheSize, Endpoint, LogLevel, PrefetchAll, AllowOther, NoPassthrough, ReadAheadKb,
            MaxConnections, DemandParts, StallTimeout, MaxAttempts, Redis, PeerListen, PeerAdvertise, PeerTokenFile, PeerWait, VerifyKey, ReadyFile, MountPoint,
        };
        command.SetAction((parse, cancel) => RunAsync(parse, cancel));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken cancel)
    {
        Observability observability;
        try { observability = Logging.Start(parse.GetValue(LogLevel)!); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"mlfs mount: {e.Message}");
            return ExitCodes.InvalidInput;
        }
        using var _ = observability;
        var logger = observability.LoggerFactory.CreateLogger("mlfs");
        string sizeText = parse.GetValue(CacheSize)!;
        if (!Sizes.TryParse(sizeText, out long cacheSize) || cacheSize <= 0)
        {
            Console.Error.WriteLine($"mlfs mount: --cache-size \"{sizeText}\" is not a size (e.g. 50G)");
            return ExitCodes.InvalidInput;
        }
        string manifestSizeText = parse.GetValue(MaxManifestSize)!;
        if (!Sizes.TryParse(manifestSizeText, out long maxManifestBytes) || maxManifestBytes <= 0 || maxManifestBytes > Array.MaxLength)
        {
            Console.Error.WriteLine($"mlfs mount: --max-manifest-size \"{manifestSizeText}\" is not a size between 1 byte and 2047M (e.g. 512M)");
            return ExitCodes.InvalidInput;
        }

        MlArtifactFs.Fleet.FleetOptions? fleet;
        try { fleet = ParseFleet(parse); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"mlfs mount: {e.Message}");
            return ExitCodes.InvalidInput;
        }

        var keys = new List<System.Security.Cryptography.ECDsa>();
        try
        {
            foreach (string keyPath in parse.GetValue(VerifyKey) ?? []) keys.Add(ManifestSignature.LoadKey(keyPath, requirePrivate: false));
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"mlfs mount: --verify-key: {e.Message}");
            return ExitCodes.InvalidInput;
        }

        var options = new MountOptions
        {
            VerifyKeys = keys,
            Fleet = fleet,
            ManifestPath = parse.GetValue(Manifest)!,
            MaxManifestBytes = maxManifestBytes,
            MountPoint = parse.GetValue(MountPoint)!,
            CacheDirectory = parse.GetValue(CacheDir),
            CacheSize = cacheSize,
            Endpoint = parse.GetValue(Endpoint),
            PrefetchAll = parse.GetValue(PrefetchAll),
            AllowOther = parse.GetValue(AllowOther),
            Passthrough = !parse.GetValue(NoPassthrough),
            ReadAheadKb = parse.GetValue(ReadAheadKb),
            Redis = parse.GetValue(Redis),
            Fetcher = new FetcherOptions
            {
                MaxConcurrentFetches = Math.Max(1, parse.GetValue(MaxConnections)),
                DemandChunkParts = Math.Clamp(parse.GetValue(DemandParts), 0, 16),
                StallTimeout = TimeSpan.FromSeconds(Math.Max(1, parse.GetValue(StallTimeout))),
                MaxAttempts = Math.Max(1, parse.GetValue(MaxAttempts)),
            },
        };

        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });

        ModelMount mount;
        try
        {
            mount = await ModelMount.StartAsync(options, logger, stop.Token).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            var (code, message) = Classify(e);
            Console.Error.WriteLine($"mlfs mount: {message}");
            return code;
        }

        await using (mount.ConfigureAwait(false))
        {
            var status = mount.GetStatus();
            string ready = $"mlfs: ready: {status.ArtifactId} {status.Version} mounted at {status.MountPoint} ({status.Files} files, {Sizes.Format(status.TotalBytes)}; cache {status.CacheDirectory}; passthrough {(status.Passthrough ? "on" : "off")})";
            Console.Out.WriteLine(ready);
            await Console.Out.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            if (parse.GetValue(ReadyFile) is { } readyFile) WriteReadyFile(readyFile, ready + "\n");
            try { await mount.Completion.WaitAsync(stop.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) { logger.LogInformation("signal received: unmounting {MountPoint}", status.MountPoint); }
            if (mount.Completion.IsCompleted && !stop.IsCancellationRequested)
                logger.LogInformation("{MountPoint} was unmounted", status.MountPoint);
        }
        return ExitCodes.Success;
    }

    /// <summary>Turns a start-up failure into an exit code and a one-line (or few-line) message.</summary>
    internal static (int Code, string Message) Classify(Exception e) => e switch
    {
        ManifestException m => (ExitCodes.InvalidInput, m.Message),
        ManifestSignatureException s => (ExitCodes.SignatureRefused, s.Message),
        FuseMountException f => (ExitCodes.MountError, f.Message),
        MountException { AccessDenied: true } m
            => (ExitCodes.StorageError, m.Message + "\n(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, the profile, or the role's permissions)"),
        MountException m => (ExitCodes.StorageError, m.Message),
        ArgumentException a => (ExitCodes.InvalidInput, a.Message),
        ObjectStoreException s => (ExitCodes.StorageError, s.Message),
        UnauthorizedAccessException u => (ExitCodes.MountError, u.Message),
        IOException io => (ExitCodes.MountError, io.Message),
        OperationCanceledException => (ExitCodes.Failure, "interrupted before the mount was ready"),
        _ => (ExitCodes.Failure, $"{e.GetType().Name}: {e.Message}"),
    };
}
