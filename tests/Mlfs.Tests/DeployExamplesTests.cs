using System.Text.Json;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>
/// The deployment examples are documented, not run here: they must at least parse, and say what the
/// README says they do (a DaemonSet in fleet mode with its token from a Secret, Bidirectional propagation).
/// </summary>
public sealed class DeployExamplesTests
{
    /// <summary>Every YAML document of a file, as JSON (python3-yaml: scripts/test.sh installs it).</summary>
    private static async Task<List<JsonElement>> LoadAsync(string relative)
    {
        string path = Path.Combine(Repo.Root, relative);
        var result = await Repo.RunAsync("python3", ["-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))", path]);
        Assert.True(result.ExitCode == 0, $"{relative} does not parse as YAML:\n{result.Stderr}");
        return [.. JsonDocument.Parse(result.Stdout).RootElement.EnumerateArray()];
    }

    [Fact]
    public async Task TheKubernetesFleetExampleIsADaemonSetInFleetModeWithItsTokenFromASecret()
    {
        var docs = await LoadAsync("deploy/kubernetes/mlfs-fleet.yaml");
        foreach (var doc in docs)
        {
            Assert.True(doc.TryGetProperty("apiVersion", out _) && doc.TryGetProperty("kind", out _), "a document without apiVersion or kind");
            Assert.False(string.IsNullOrEmpty(doc.GetProperty("metadata").GetProperty("name").GetString()));
        }
        var daemonSet = Assert.Single(docs, d => d.GetProperty("kind").GetString() == "DaemonSet");
        var pod = daemonSet.GetProperty("spec").GetProperty("template").GetProperty("spec");
        var mlfs = pod.GetProperty("containers")[0];
        var args = mlfs.GetProperty("args").EnumerateArray().Select(a => a.GetString()!).ToList();
        Assert.Equal("mount", args[0]);
        Assert.Contains(args, a => a.StartsWith("--peer-listen=", StringComparison.Ordinal));
        Assert.Contains(args, a => a.StartsWith("--peer-advertise=$(POD_IP):", StringComparison.Ordinal));
        var env = mlfs.GetProperty("env").EnumerateArray().ToDictionary(e => e.GetProperty("name").GetString()!);
        Assert.True(env["MLFS_PEER_TOKEN"].GetProperty("valueFrom").TryGetProperty("secretKeyRef", out _), "the token must come from a Secret");
        Assert.False(env["MLFS_PEER_TOKEN"].TryGetProperty("value", out _), "no literal token");
        Assert.True(env.ContainsKey("MLFS_REDIS") && env.ContainsKey("POD_IP"));
        var model = mlfs.GetProperty("volumeMounts").EnumerateArray().Single(v => v.GetProperty("mountPath").GetString() == "/mnt/model");
        Assert.Equal("Bidirectional", model.GetProperty("mountPropagation").GetString());
        Assert.True(mlfs.GetProperty("securityContext").GetProperty("privileged").GetBoolean());
        Assert.Contains(docs, d => d.GetProperty("kind").GetString() == "NetworkPolicy");
    }

    [Fact]
    public async Task TheComposeExampleParses()
    {
        var compose = Assert.Single(await LoadAsync("deploy/compose.yaml"));
        Assert.True(compose.GetProperty("services").TryGetProperty("mlfs", out var mlfs));
        Assert.Contains(mlfs.GetProperty("volumes").EnumerateArray(), v => v.GetString()!.EndsWith(":rshared", StringComparison.Ordinal));
    }
}
