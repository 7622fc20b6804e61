using Amazon.Runtime;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse;
using MlArtifactFs.Mounting;
using MlArtifactFs.Storage;

namespace Mlfs.Tests.Infrastructure;

/// <summary>A ModelMount in this process on a fresh mount point; unmounted and cleaned up on dispose.</summary>
public sealed class InProcessMount : IAsyncDisposable
{
    private InProcessMount(ModelMount mount, string mountPoint, ListLogger logger, string controlDir)
    {
        _controlDir = controlDir;
        Mount = mount;
        MountPoint = mountPoint;
        Logger = logger;
    }

    private readonly string _controlDir;

    public ModelMount Mount { get; }
    public string MountPoint { get; }
    public ListLogger Logger { get; }
    public string this[string relative] => Path.Combine(MountPoint, relative);

    public static FetcherOptions FastRetries => new()
    {
        RetryBaseDelay = TimeSpan.FromMilliseconds(5),
        RetryMaxDelay = TimeSpan.FromMilliseconds(50),
        StallTimeout = TimeSpan.FromSeconds(2),
        MaxAttempts = 6,
    };

    public static async Task<InProcessMount> StartAsync(S3Fixture s3, string manifest, string cacheDir, string? endpoint = null,
        long cacheSize = 1L << 30, FetcherOptions? fetcher = null, string? secret = null, bool passthrough = true, string? redis = null, bool prefetchAll = false)
    {
        string mountPoint = Directory.CreateTempSubdirectory("mlfs-mnt-").FullName;
        string controlDir = Directory.CreateTempSubdirectory("mlfs-ctl-").FullName; // private (0700), as the mount requires
        var logger = new ListLogger();
        var settings = new S3Settings(new Uri(endpoint ?? s3.Endpoint), s3.Region, new BasicAWSCredentials(s3.AccessKey, secret ?? s3.SecretKey));
        try
        {
            var mount = await ModelMount.StartAsync(new MountOptions
            {
                ManifestPath = manifest,
                MountPoint = mountPoint,
                CacheDirectory = cacheDir,
                CacheSize = cacheSize,
                S3 = settings,
                Fetcher = fetcher ?? FastRetries,
                Passthrough = passthrough,
                Redis = redis,
                PrefetchAll = prefetchAll,
                ControlSocket = Path.Combine(controlDir, "control.sock"),
            }, logger);
            return new InProcessMount(mount, mountPoint, logger, controlDir);
        }
        catch
        {
            Directory.Delete(mountPoint);
            Directory.Delete(controlDir, recursive: true);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Mount.DisposeAsync();
        if (FuseMounter.IsMountPoint(MountPoint)) FuseMounter.TryUnmount(MountPoint, lazy: true);
        try { Directory.Delete(MountPoint); } catch (IOException) { }
        try { Directory.Delete(_controlDir, recursive: true); } catch (IOException) { }
    }
}
