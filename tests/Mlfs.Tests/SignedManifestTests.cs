using MlArtifactFs.Fuse;
using System.Text.Json;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>
/// Signed manifests as a user runs them: `mlfs sign --new-key`, `mlfs sign`, `mlfs mount --verify-key`,
/// `mlfs switch`; refusals exit 7 and change nothing.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class SignedManifestTests(S3Fixture s3) : MountProcessTestBase("mlfs-signed-")
{
    private static async Task<Repo.Result> Mlfs(params string[] args) => await Repo.RunAsync(Repo.Mlfs, args);

    [Fact]
    public async Task OnlyManifestsSignedByATrustedKeyAreMountedOrSwitchedTo()
    {
        _model.Add("config.json", 300, 1).Add("weights.bin", (3 << 20) + 7, 2);
        string bucket = await s3.CreateBucketAsync("signed");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string v1 = await _model.WriteManifestAsync($"s3://{bucket}/m"), v2 = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v2");
        string unsigned = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v3");
        string key = Path.Combine(_work.FullName, "publisher.pem"), stranger = Path.Combine(_work.FullName, "stranger.pem");

        var made = await Mlfs("sign", "--new-key", key);
        Assert.True(made.ExitCode == 0, made.Stderr);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        Assert.Equal(0, (await Mlfs("sign", "--new-key", stranger)).ExitCode);
        foreach (string m in new[] { v1, v2 })
        {
            var signed = await Mlfs("sign", "--key", key, m);
            Assert.True(signed.ExitCode == 0, signed.Stderr);
            Assert.True(File.Exists(m + ".sig"));
        }

        // Mounted with the publisher's key (and an old one beside it: rotation), v1 is served.
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, v1, mp, Cache, s3.Environment(), true,
            "--verify-key", stranger + ".pub", "--verify-key", key + ".pub");
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path);
        Assert.Equal(JsonValueKind.String, (await StatusAsync(mp)).GetProperty("signed_by").ValueKind);
        Assert.Contains("verified, signed by key", (await Mlfs("status", mp)).Stdout);

        var toV2 = await Mlfs("switch", "--manifest", v2, mp);
        Assert.True(toV2.ExitCode == 0, toV2.Stderr);
        Assert.Equal("v2", (await StatusAsync(mp)).GetProperty("version").GetString());

        // Refused switches, each exit 7 with v2 still served: an unsigned manifest; a manifest changed after
        // signing (its version), so the signature beside it is another manifest's.
        var noSignature = await Mlfs("switch", "--manifest", unsigned, mp);
        Assert.Equal(7, noSignature.ExitCode);
        Assert.Contains(unsigned, noSignature.Stderr);
        Assert.Contains("not signed", noSignature.Stderr);
        string altered = Path.Combine(_model.ManifestFolder, "altered.json");
        await File.WriteAllTextAsync(altered, (await File.ReadAllTextAsync(v1)).Replace("\"version\": \"v1\"", "\"version\": \"v9\""));
        File.Copy(v1 + ".sig", altered + ".sig");
        var tampered = await Mlfs("switch", "--manifest", altered, mp);
        Assert.Equal(7, tampered.ExitCode);
        Assert.Contains("another manifest", tampered.Stderr);
        Assert.Equal("v2", (await StatusAsync(mp)).GetProperty("version").GetString());
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path + " after the refused switches");

        // A mount that trusts only the stranger refuses v1 (signed by the publisher): exit 7, nothing mounted.
        string mp2 = NewMountPoint();
        var refused = await Mlfs("mount", "--manifest", v1, "--cache-dir", Cache, "--verify-key", stranger + ".pub", mp2);
        Assert.Equal(7, refused.ExitCode);
        Assert.Contains("trusted key", refused.Stderr);
        Assert.False(FuseMounter.IsMountPoint(mp2));
        // A key that is not a key is a usage error.
        var badKey = await Mlfs("mount", "--manifest", v1, "--cache-dir", Cache, "--verify-key", v1, mp2);
        Assert.Equal(2, badKey.ExitCode);
        Assert.Contains("--verify-key", badKey.Stderr);
    }

    [Fact]
    public async Task WithoutKeysAManifestMountsAsBeforeAndStatusSaysItIsUnsigned()
    {
        _model.Add("a.bin", 5000, 3);
        string manifest = await _model.PublishAsync(s3, "unsigned");
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(), true);
        Assert.Equal(JsonValueKind.Null, (await StatusAsync(mp)).GetProperty("signed_by").ValueKind);
        Assert.Contains("unsigned", (await Mlfs("status", mp)).Stdout);
    }

    /// <summary>
    /// Manifests kept in the bucket beside the model: `--manifest s3://...` and http(s) URLs for mount and switch,
    /// fetched with the mount's credentials and endpoint, with `.sig` beside them when keys are given; a wrong
    /// endpoint, a missing signature and an oversized manifest are refused with their own messages, nothing mounted.
    /// </summary>
    [Fact]
    public async Task ManifestsAndTheirSignaturesComeStraightFromS3()
    {
        _model.Add("config.json", 400, 7).Add("weights.bin", (2 << 20) + 3, 8);
        string bucket = await s3.CreateBucketAsync("remote");
        await s3.UploadFolderAsync(bucket, "m", _model.Folder);
        string v1 = await _model.WriteManifestAsync($"s3://{bucket}/m"), v2 = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v2");
        string unsigned = await _model.WriteManifestAsync($"s3://{bucket}/m", version: "v3");
        string key = Path.Combine(_work.FullName, "publisher.pem");
        Assert.Equal(0, (await Mlfs("sign", "--new-key", key, v1)).ExitCode);
        Assert.Equal(0, (await Mlfs("sign", "--key", key, v2)).ExitCode);
        foreach (var (name, file) in new[] { ("v1.json", v1), ("v1.json.sig", v1 + ".sig"), ("v2.json", v2), ("v2.json.sig", v2 + ".sig"), ("v3.json", unsigned) })
            await s3.PutAsync(bucket, $"manifests/{name}", await File.ReadAllBytesAsync(file));

        // Mounted from s3:// with the key: v1 served, byte-exact; switched to v2 by its endpoint URL (path style).
        string mp = NewMountPoint();
        await using (var mount = await MountProcess.StartAsync(_work.FullName, $"s3://{bucket}/manifests/v1.json", mp, Cache, s3.Environment(), true,
            "--verify-key", key + ".pub"))
        {
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path);
            var status = await StatusAsync(mp);
            Assert.Equal("v1", status.GetProperty("version").GetString());
            Assert.Equal(JsonValueKind.String, status.GetProperty("signed_by").ValueKind);

            var toV2 = await Mlfs("switch", "--manifest", $"{s3.Endpoint.TrimEnd('/')}/{bucket}/manifests/v2.json", mp);
            Assert.True(toV2.ExitCode == 0, toV2.Stderr);
            Assert.Equal("v2", (await StatusAsync(mp)).GetProperty("version").GetString());
            // An unsigned manifest in the bucket: refused (exit 7), naming its missing signature; v2 still served.
            var noSignature = await Mlfs("switch", "--manifest", $"s3://{bucket}/manifests/v3.json", mp);
            Assert.Equal(7, noSignature.ExitCode);
            Assert.Contains($"s3://{bucket}/manifests/v3.json.sig does not exist", noSignature.Stderr);
            var missing = await Mlfs("switch", "--manifest", $"s3://{bucket}/manifests/v9.json", mp);
            Assert.NotEqual(0, missing.ExitCode);
            Assert.Contains("does not exist", missing.Stderr);
            Assert.Equal("v2", (await StatusAsync(mp)).GetProperty("version").GetString());
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path + " after the refused switches");
        }

        // Without keys an unsigned manifest mounts from S3 as before.
        string mp2 = NewMountPoint();
        await using (var plain = await MountProcess.StartAsync(_work.FullName, $"s3://{bucket}/manifests/v3.json", mp2, Cache, s3.Environment(), true))
            Assert.Equal("v3", (await StatusAsync(mp2)).GetProperty("version").GetString());

        // A wrong endpoint: a storage error (exit 3) naming the manifest; nothing mounted.
        string mp3 = NewMountPoint();
        string closedPort = $"http://127.0.0.1:{FreePort()}";
        var wrongEndpoint = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", $"s3://{bucket}/manifests/v1.json", "--cache-dir", Cache, mp3], s3.Environment(closedPort));
        Assert.Equal(3, wrongEndpoint.ExitCode);
        Assert.Contains($"cannot fetch s3://{bucket}/manifests/v1.json", wrongEndpoint.Stderr);
        Assert.Contains("connection failed", wrongEndpoint.Stderr);
        Assert.False(FuseMounter.IsMountPoint(mp3));

        // Larger than --max-manifest-size: refused as input (exit 2) before it is parsed.
        var oversized = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", $"s3://{bucket}/manifests/v1.json", "--cache-dir", Cache,
            "--max-manifest-size", "200", mp3], s3.Environment());
        Assert.Equal(2, oversized.ExitCode);
        Assert.Contains("larger than the limit of 200 bytes (--max-manifest-size)", oversized.Stderr);
        Assert.False(FuseMounter.IsMountPoint(mp3));
        // A metadata address as the manifest's host is refused at load, without a connection.
        var metadata = await Repo.RunAsync(Repo.Mlfs, ["mount", "--manifest", "http://169.254.169.254/latest/m.json", "--cache-dir", Cache, mp3], s3.Environment());
        Assert.Equal(2, metadata.ExitCode);
        Assert.Contains("link-local", metadata.Stderr);
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>`mlfs push --sign-key` signs what it writes; a mount that requires the key takes it.</summary>
    [Fact]
    public async Task PushSignsTheManifestItWritesAndAMountVerifiesIt()
    {
        _model.Add("config.json", 700, 5).Add("weights.bin", (2 << 20) + 1, 6);
        string bucket = await s3.CreateBucketAsync("pushsign");
        string key = Path.Combine(_work.FullName, "k.pem"), manifest = Path.Combine(_work.FullName, "pushed.json");
        Assert.Equal(0, (await Mlfs("sign", "--new-key", key)).ExitCode);
        var pushed = await Repo.RunAsync(Repo.Mlfs, ["push", _model.Folder, $"s3://{bucket}/bert/v1", "--id", "bert", "--version", "v1",
            "--endpoint", s3.Endpoint, "-o", manifest, "--sign-key", key], s3.Environment());
        Assert.True(pushed.ExitCode == 0, pushed.Stderr);
        Assert.True(File.Exists(manifest + ".sig"));
        string mp = NewMountPoint();
        await using var mount = await MountProcess.StartAsync(_work.FullName, manifest, mp, Cache, s3.Environment(), true, "--verify-key", key + ".pub");
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp, path)), path);
        // -o s3://...: the manifest and its signature land beside the model, and a mount takes them from there.
        var toS3 = await Repo.RunAsync(Repo.Mlfs, ["push", _model.Folder, $"s3://{bucket}/bert/v1", "--id", "bert", "--version", "v1b",
            "--endpoint", s3.Endpoint, "-o", $"s3://{bucket}/bert/manifests/v1b.json", "--sign-key", key], s3.Environment());
        Assert.True(toS3.ExitCode == 0, toS3.Stderr);
        Assert.Contains($"signed: s3://{bucket}/bert/manifests/v1b.json.sig", toS3.Stderr);
        string mp2 = NewMountPoint();
        await using (var fromS3 = await MountProcess.StartAsync(_work.FullName, $"s3://{bucket}/bert/manifests/v1b.json", mp2, Cache, s3.Environment(), true,
            "--verify-key", key + ".pub"))
        {
            Assert.Equal("v1b", (await StatusAsync(mp2)).GetProperty("version").GetString());
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(Path.Combine(mp2, path)), path + " (manifest from S3)");
        }
        // Without -o there is no file to sign beside: refused before anything is uploaded.
        var noOutput = await Repo.RunAsync(Repo.Mlfs, ["push", _model.Folder, $"s3://{bucket}/bert/v2", "--id", "bert", "--version", "v2",
            "--endpoint", s3.Endpoint, "--sign-key", key], s3.Environment());
        Assert.Equal(2, noOutput.ExitCode);
        Assert.Contains("--sign-key needs -o", noOutput.Stderr);
    }

    /// <summary>
    /// sigstore-js (@sigstore/verify, installed by the test command) verifies the bundle `mlfs sign` writes,
    /// with the public key and no transparency log; and refuses it with another key or another manifest.
    /// </summary>
    [Fact]
    public async Task SigstoreJsVerifiesTheBundleMlfsSignWrites()
    {
        _model.Add("config.json", 300, 4);
        string manifest = await _model.WriteManifestAsync("s3://models/m"), other = await _model.WriteManifestAsync("s3://models/m", version: "v2");
        string key = Path.Combine(_work.FullName, "k.pem"), stranger = Path.Combine(_work.FullName, "s.pem");
        Assert.Equal(0, (await Mlfs("sign", "--new-key", key, manifest)).ExitCode);
        Assert.Equal(0, (await Mlfs("sign", "--new-key", stranger)).ExitCode);
        string script = Path.Combine(Repo.Root, "tests", "interop", "sigstore-verify.js");

        var verified = await Repo.RunAsync("node", [script, manifest + ".sig", key + ".pub", manifest]);
        Assert.True(verified.ExitCode == 0, verified.Stderr);
        Assert.Equal("verified: test-model@v1", verified.Stdout.Trim());
        Assert.NotEqual(0, (await Repo.RunAsync("node", [script, manifest + ".sig", stranger + ".pub", manifest])).ExitCode);
        Assert.Equal(2, (await Repo.RunAsync("node", [script, manifest + ".sig", key + ".pub", other])).ExitCode);
    }
}
