using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using DotNet.Testcontainers.Builders;
using DotNet.Testcontainers.Configurations;
using DotNet.Testcontainers.Containers;

namespace Mlfs.Tests.Infrastructure;

/// <summary>
/// A real S3-compatible server for the whole test run: MinIO through Testcontainers when a Docker
/// engine answers, otherwise the loopback OpenStack Swift + s3api that scripts/local-s3.sh
/// installs and starts. Started once, stopped at the end (unless it was already running).
/// </summary>
public sealed class S3Fixture : IAsyncLifetime
{
    private IContainer? _minio;
    private bool _startedLocal;

    public string Endpoint { get; private set; } = "";
    public string AccessKey { get; private set; } = "";
    public string SecretKey { get; private set; } = "";
    public string Region => "us-east-1";
    public string Backend { get; private set; } = "";
    public AmazonS3Client Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        if (TestcontainersSettings.OS.DockerEndpointAuthConfig is not null)
        {
            _minio = new ContainerBuilder("minio/minio:latest")
                .WithCommand("server", "/data")
                .WithEnvironment("MINIO_ROOT_USER", "mlfs-test")
                .WithEnvironment("MINIO_ROOT_PASSWORD", "mlfs-test-secret")
                .WithPortBinding(9000, true)
                .WithWaitStrategy(Wait.ForUnixContainer().UntilHttpRequestIsSucceeded(r => r.ForPath("/minio/health/ready").ForPort(9000)))
                .Build();
            await _minio.StartAsync();
            Endpoint = $"http://127.0.0.1:{_minio.GetMappedPublicPort(9000)}";
            AccessKey = "mlfs-test";
            SecretKey = "mlfs-test-secret";
            Backend = "minio";
        }
        else
        {
            string script = Path.Combine(Repo.Root, "scripts", "local-s3.sh");
            bool wasUp = (await Repo.RunAsync(script, ["env"])).ExitCode == 0 && await IsHealthyAsync("http://127.0.0.1:18080");
            var start = await Repo.RunAsync(script, ["start"], timeout: TimeSpan.FromMinutes(10));
            if (start.ExitCode != 0) throw new InvalidOperationException($"scripts/local-s3.sh start failed:\n{start.Stderr}");
            _startedLocal = !wasUp;
            var exports = start.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Where(l => l.StartsWith("export ", StringComparison.Ordinal))
                .Select(l => l["export ".Length..].Split('=', 2))
                .ToDictionary(kv => kv[0], kv => kv[1]);
            Endpoint = exports["AWS_ENDPOINT_URL"];
            AccessKey = exports["AWS_ACCESS_KEY_ID"];
            SecretKey = exports["AWS_SECRET_ACCESS_KEY"];
            Backend = "swift-s3api";
        }
        Client = new AmazonS3Client(new BasicAWSCredentials(AccessKey, SecretKey), new AmazonS3Config
        {
            ServiceURL = Endpoint,
            ForcePathStyle = true,
            AuthenticationRegion = Region,
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
        });
    }

    private static async Task<bool> IsHealthyAsync(string endpoint)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        try { return (await http.GetAsync(endpoint + "/healthcheck")).IsSuccessStatusCode; }
        catch (HttpRequestException) { return false; }
        catch (TaskCanceledException) { return false; }
    }

    public async Task DisposeAsync()
    {
        Client?.Dispose();
        if (_minio is not null) await _minio.DisposeAsync();
        if (_startedLocal) await Repo.RunAsync(Path.Combine(Repo.Root, "scripts", "local-s3.sh"), ["stop"]);
    }

    /// <summary>A fresh bucket per test class keeps tests independent.</summary>
    public async Task<string> CreateBucketAsync(string prefix)
    {
        string bucket = $"{prefix}-{Guid.NewGuid():N}"[..Math.Min(40, prefix.Length + 33)].ToLowerInvariant();
        await Client.PutBucketAsync(new PutBucketRequest { BucketName = bucket });
        return bucket;
    }

    public Task PutAsync(string bucket, string key, byte[] bytes) =>
        Client.PutObjectAsync(new PutObjectRequest
        {
            BucketName = bucket,
            Key = key,
            InputStream = new MemoryStream(bytes),
            UseChunkEncoding = false, // aws-chunked bodies are rejected or stored framed by some S3-compatible servers
        });

    /// <summary>Uploads a folder under a prefix (what `aws s3 sync` does in the seed's workflow).</summary>
    public async Task UploadFolderAsync(string bucket, string prefix, string folder)
    {
        foreach (var file in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
        {
            string key = prefix.TrimEnd('/') + "/" + Path.GetRelativePath(folder, file).Replace('\\', '/');
            await PutAsync(bucket, key, await File.ReadAllBytesAsync(file));
        }
    }

    /// <summary>Environment for an mlfs process talking to this server (optionally through a proxy).</summary>
    public Dictionary<string, string?> Environment(string? endpoint = null, string? secret = null) => new()
    {
        ["AWS_ENDPOINT_URL"] = endpoint ?? Endpoint,
        ["AWS_ACCESS_KEY_ID"] = AccessKey,
        ["AWS_SECRET_ACCESS_KEY"] = secret ?? SecretKey,
        ["AWS_REGION"] = Region,
        ["AWS_PROFILE"] = null,
    };
}

[CollectionDefinition(Name)]
public sealed class S3Collection : ICollectionFixture<S3Fixture>, ICollectionFixture<RedisFixture>
{
    public const string Name = "S3 server";
}
