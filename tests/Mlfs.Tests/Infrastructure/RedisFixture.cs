namespace Mlfs.Tests.Infrastructure;

/// <summary>A real redis-server on loopback for the test run (scripts/local-redis.sh), stopped at the end.</summary>
public sealed class RedisFixture : IAsyncLifetime
{
    public const int Port = 16579;
    private readonly Dictionary<string, string?> _env = new()
    {
        ["MLFS_REDIS_PORT"] = Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["MLFS_REDIS_DIR"] = "/tmp/mlfs-test-redis",
    };

    public string ConnectionString => $"127.0.0.1:{Port}";

    public async Task InitializeAsync() => await StartAsync();

    public async Task StartAsync()
    {
        var result = await Repo.RunAsync(Path.Combine(Repo.Root, "scripts", "local-redis.sh"), ["start"], _env, TimeSpan.FromMinutes(5));
        if (result.ExitCode != 0) throw new InvalidOperationException("scripts/local-redis.sh start failed:\n" + result.Stderr);
    }

    public async Task StopAsync() => await Repo.RunAsync(Path.Combine(Repo.Root, "scripts", "local-redis.sh"), ["stop"], _env);

    public Task DisposeAsync() => StopAsync();
}
