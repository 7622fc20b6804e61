// The mlfs development stack: S3 (MinIO in a container, or OpenStack Swift + s3api as local
// processes when no container engine answers), Redis (the shared cache's index), a seeding step
// that pushes a sample model in two versions with signed manifests, and the mount service (`mlfs mount`) serving v1 at
// MLFS_DEV_MOUNT (default /mnt/mlfs-dev). Fetch traces and metrics show in the Aspire dashboard.
using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

var builder = DistributedApplication.CreateBuilder(args);

string repo = Path.GetFullPath(Path.Combine(builder.AppHostDirectory, ".."));
// State (S3 data, cache, manifests) in a private directory of this user, never a fixed name under /tmp,
// where another local user could have prepared it (the stack often runs as root).
string work = builder.Configuration["MLFS_DEV_DIR"] ?? Path.Combine(
    Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } runtime ? runtime : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"),
    "mlfs-dev");
string mountPoint = builder.Configuration["MLFS_DEV_MOUNT"] ?? "/mnt/mlfs-dev";
string sampleMb = builder.Configuration["MLFS_SAMPLE_MB"] ?? "256";
// MLFS_DEV_FLEET=1: the fleet profile, three mount services (mount-1..3), each with its own cache and
// mount point (MLFS_DEV_MOUNT-1..3), serving each other verified chunks on 127.0.0.1:18101..18103.
bool fleet = builder.Configuration["MLFS_DEV_FLEET"] == "1";
var nodes = fleet
    ? Enumerable.Range(1, 3).Select(i => new MountNode($"mount-{i}", $"{mountPoint}-{i}", Path.Combine(work, $"cache-{i}"), Path.Combine(work, $"mount-{i}.ready"), 18100 + i)).ToList()
    : [new MountNode("mount", mountPoint, Path.Combine(work, "cache"), Path.Combine(work, "mount.ready"), null)];
string fleetToken = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24)); // this run's only
int s3Port = int.Parse(builder.Configuration["MLFS_S3_PORT"] ?? "18080", System.Globalization.CultureInfo.InvariantCulture);
int redisPort = int.Parse(builder.Configuration["MLFS_REDIS_PORT"] ?? "16379", System.Globalization.CultureInfo.InvariantCulture);
Directory.CreateDirectory(work, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
if ((File.GetUnixFileMode(work) & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
    throw new InvalidOperationException($"{work} is writable by group or others; choose a private MLFS_DEV_DIR");
Console.WriteLine($"mlfs AppHost: state in {work}");
foreach (var node in nodes)
{
    Directory.CreateDirectory(node.MountPoint);
    File.Delete(node.ReadyFile);
}

var (containers, why) = ContainerProbe.Decide(ContainerProbe.RunProcess);
Console.WriteLine(containers
    ? $"mlfs AppHost: containers ({why}): S3 = MinIO, Redis = container"
    : $"mlfs AppHost: local processes ({why}): S3 = local Swift + s3api (scripts/local-s3.sh), Redis = redis-server");

// ---- S3 --------------------------------------------------------------------------------------
string accessKey, secretKey;
EndpointReference s3Endpoint;
IResourceBuilder<IResourceWithEndpoints> s3;
if (containers)
{
    accessKey = "mlfs";
    secretKey = "mlfs-dev-secret";
    var minio = builder.AddContainer("s3", ContainerProbe.MinioImage, ContainerProbe.MinioTag)
        .WithArgs("server", "/data", "--console-address", ":9001")
        .WithEnvironment("MINIO_ROOT_USER", accessKey)
        .WithEnvironment("MINIO_ROOT_PASSWORD", secretKey)
        .WithHttpEndpoint(targetPort: 9000, name: "api")
        .WithHttpEndpoint(targetPort: 9001, name: "console")
        .WithHttpHealthCheck("/minio/health/ready", endpointName: "api");
    s3 = minio;
    s3Endpoint = minio.GetEndpoint("api");
}
else
{
    accessKey = "test:tester";
    secretKey = "testing";
    var swift = builder.AddExecutable("s3", "bash", repo, "scripts/local-s3.sh", "run")
        .WithEnvironment("MLFS_S3_PORT", s3Port.ToString(System.Globalization.CultureInfo.InvariantCulture))
        .WithEnvironment("MLFS_S3_DIR", Path.Combine(work, "s3"))
        .WithHttpEndpoint(port: s3Port, name: "api", isProxied: false)
        .WithHttpHealthCheck("/healthcheck", endpointName: "api");
    s3 = swift;
    s3Endpoint = swift.GetEndpoint("api");
}

// ---- Redis -----------------------------------------------------------------------------------
IResourceBuilder<IResource> redis = containers
    ? builder.AddRedis("redis", port: redisPort).WithImage(ContainerProbe.RedisImage, ContainerProbe.RedisTag)
    : builder.AddExecutable("redis", "bash", repo, "scripts/local-redis.sh", "run") // installs redis-server if missing
        .WithEnvironment("MLFS_REDIS_PORT", redisPort.ToString(System.Globalization.CultureInfo.InvariantCulture))
        .WithEndpoint(port: redisPort, name: "tcp", scheme: "tcp", isProxied: false);

// ---- seed: a sample model, v1 and v2, pushed content-addressed ---------------------------------
// The seed step and the dashboard commands run the mlfs built with the same configuration as this AppHost.
string configuration = AppContext.BaseDirectory.Contains("/bin/Release/", StringComparison.Ordinal) ? "Release" : "Debug";
string mlfsBinary = Path.Combine(repo, "src", "Mlfs", "bin", configuration, "net10.0", "mlfs");
var seed = builder.AddExecutable("seed", "bash", repo, "scripts/seed-sample.sh")
    .WithEnvironment("MLFS_BIN", mlfsBinary)
    .WithEnvironment("MLFS_DEV_DIR", work)
    .WithEnvironment("MLFS_SAMPLE_MB", sampleMb)
    .WithEnvironment("AWS_ENDPOINT_URL", s3Endpoint)
    .WithEnvironment("AWS_ACCESS_KEY_ID", accessKey)
    .WithEnvironment("AWS_SECRET_ACCESS_KEY", secretKey)
    .WithEnvironment("AWS_REGION", "us-east-1")
    .WaitFor(s3);

// ---- the mount service --------------------------------------------------------------------------
// The seed signs the manifests with a key it makes for this run; the mounts trust that key only.
string publisherKey = Path.Combine(work, "keys", "publisher.pem.pub");
static string ManifestUrl(string version) => $"s3://models/sample/manifests/{version}.json";
string redisConnection = "127.0.0.1:" + redisPort.ToString(System.Globalization.CultureInfo.InvariantCulture);

// As a project on the host (the default), or, with MLFS_DEV_MOUNT_CONTAINER=1, as a container of the
// mount service image (scripts/container-image.sh; MLFS_DEV_MOUNT_IMAGE, default localhost/mlfs:dev) run
// by scripts/mount-container.sh with the README's flags. DCP's own container support is not used for
// it: it needs a tunnel proxy image from a registry, and a FUSE mount propagated to the host needs
// `--device /dev/fuse`, SYS_ADMIN and an rshared bind, which that script sets up.
bool mountInContainer = builder.Configuration["MLFS_DEV_MOUNT_CONTAINER"] == "1";
string image = builder.Configuration["MLFS_DEV_MOUNT_IMAGE"] ?? "localhost/mlfs:dev";
if (mountInContainer) Console.WriteLine($"mlfs AppHost: the mount service runs in a container ({image}, podman)");
if (fleet) Console.WriteLine($"mlfs AppHost: fleet profile: {string.Join(", ", nodes.Select(n => $"{n.Name} at {n.MountPoint}"))}");
foreach (var node in nodes)
{
    builder.Services.AddHealthChecks().AddCheck($"{node.Name}-ready", () =>
        File.Exists(node.ReadyFile) ? HealthCheckResult.Healthy() : HealthCheckResult.Unhealthy("not mounted yet"));
    // The manifest straight from S3, used only if the seed's key signed it (so is every switch).
    string[] mountArgs = ["--manifest", ManifestUrl("v1"), "--verify-key", publisherKey, "--cache-dir", node.CacheDirectory,
        "--ready-file", node.ReadyFile, "--log-level", "info"];
    if (node.PeerPort is { } peerPort) mountArgs = [.. mountArgs, "--peer-listen", $"127.0.0.1:{peerPort}"];
    IResourceBuilder<IResource> mount = mountInContainer
        ? MountService(builder.AddExecutable(node.Name, "bash", repo, ["scripts/mount-container.sh", image, work, node.MountPoint, .. mountArgs])
            .WithOtlpExporter(), node)
        : MountService(builder.AddProject<Projects.Mlfs>(node.Name).WithArgs(["mount", .. mountArgs, node.MountPoint]), node);

    foreach (var version in new[] { "v1", "v2" })
    {
        mount.WithCommand($"switch-{version}", $"Switch to {version}", async context =>
        {
            var psi = new ProcessStartInfo(mlfsBinary) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (var a in new[] { "switch", "--manifest", ManifestUrl(version), node.MountPoint }) psi.ArgumentList.Add(a);
            using var process = Process.Start(psi)!;
            string output = await process.StandardOutput.ReadToEndAsync(context.CancellationToken);
            string error = await process.StandardError.ReadToEndAsync(context.CancellationToken);
            await process.WaitForExitAsync(context.CancellationToken);
            return process.ExitCode == 0
                ? CommandResults.Success()
                : CommandResults.Failure(error.Length > 0 ? error : output);
        });
    }
}

// The same settings whichever way it runs.
IResourceBuilder<T> MountService<T>(IResourceBuilder<T> service, MountNode node) where T : IResourceWithEnvironment, IResourceWithWaitSupport
{
    service
        .WithEnvironment("AWS_ENDPOINT_URL", s3Endpoint)
        .WithEnvironment("AWS_ACCESS_KEY_ID", accessKey)
        .WithEnvironment("AWS_SECRET_ACCESS_KEY", secretKey)
        .WithEnvironment("AWS_REGION", "us-east-1")
        .WithEnvironment("MLFS_REDIS", redisConnection)
        .WithHealthCheck($"{node.Name}-ready")
        .WaitFor(s3)
        .WaitFor(redis)
        .WaitForCompletion(seed);
    if (node.PeerPort is not null) service.WithEnvironment("MLFS_PEER_TOKEN", fleetToken);
    return service;
}

var app = builder.Build();
_ = Task.Run(async () =>
{
    // Say where things are once the model is mounted (headless users have no browser open).
    var notifications = app.Services.GetRequiredService<ResourceNotificationService>();
    foreach (var node in nodes) await notifications.WaitForResourceHealthyAsync(node.Name);
    string dashboard = builder.Configuration["ASPNETCORE_URLS"] ?? "http://localhost:15888";
    Console.WriteLine();
    Console.WriteLine($"mlfs: sample model v1 mounted at {string.Join(", ", nodes.Select(n => n.MountPoint))}   (signed manifests at {ManifestUrl("v1")} and v2.json, copies in {Path.Combine(work, "manifests")})");
    Console.WriteLine($"mlfs: dashboard {dashboard}   (fetch spans under Traces; switch v1/v2 from the mount resource's commands)");
    Console.WriteLine($"mlfs: try: ls -l {nodes[0].MountPoint}; {mlfsBinary} status {nodes[0].MountPoint}");
    Console.WriteLine();
});
app.Run();

/// <summary>One mount service of the stack: its resource name, mount point, cache, ready file and (fleet profile) peer port.</summary>
internal sealed record MountNode(string Name, string MountPoint, string CacheDirectory, string ReadyFile, int? PeerPort);
