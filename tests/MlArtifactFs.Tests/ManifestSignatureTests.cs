using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using MlArtifactFs.Manifest;

namespace MlArtifactFs.Tests;

/// <summary>Signed manifests: the round trip, every refusal with its reason, and the signature checked by openssl (not our code).</summary>
public sealed class ManifestSignatureTests : IDisposable
{
    private readonly ECDsa _publisher = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly ECDsa _stranger = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("mlfs-sign-");

    public void Dispose()
    {
        _publisher.Dispose();
        _stranger.Dispose();
        _work.Delete(recursive: true);
    }

    private static string Hex(int seed) => Convert.ToHexStringLower(SHA256.HashData(BitConverter.GetBytes(seed)));

    private static byte[] Manifest(string version = "v1", int chunkSeed = 10, string artifact = "bert") => Encoding.UTF8.GetBytes($$"""
        {"artifact_id": "{{artifact}}", "version": "{{version}}", "chunk_size": 1048576, "chunk_hash": "blake3",
         "files": [
           {"path": "config.json", "url": "s3://models/bert/config.json", "size": 10, "sha256": "{{Hex(1)}}", "chunks": ["{{Hex(chunkSeed)}}"]},
           {"path": "weights.bin", "url": "s3://models/bert/weights.bin", "size": 1048577, "sha256": "{{Hex(2)}}", "chunks": ["{{Hex(chunkSeed + 1)}}", "{{Hex(chunkSeed + 2)}}"]}
         ]}
        """);

    private SignatureProblem Refusal(byte[] manifest, byte[]? bundle, params ECDsa[] keys) =>
        Assert.Throws<ManifestSignatureException>(() => ManifestSignature.Verify("m.json", manifest, bundle, keys)).Problem;

    [Fact]
    public void ASignedManifestVerifiesWithThePublishersKeyAmongOthers()
    {
        var manifest = Manifest();
        byte[] bundle = ManifestSignature.Sign(manifest, _publisher);
        Assert.Equal(ManifestSignature.KeyHint(_publisher), ManifestSignature.Verify("m.json", manifest, bundle, [_stranger, _publisher]));

        // The statement says what a Model Signing verifier expects: one subject (the manifest), every file.
        var envelope = JsonNode.Parse(bundle)!["dsseEnvelope"]!;
        var statement = JsonNode.Parse(Convert.FromBase64String((string)envelope["payload"]!))!;
        Assert.Equal("https://in-toto.io/Statement/v1", (string)statement["_type"]!);
        Assert.Equal("bert@v1", (string)statement["subject"]![0]!["name"]!);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(manifest)), (string)statement["subject"]![0]!["digest"]!["sha256"]!);
        Assert.Equal("https://model_signing/signature/v1.0", (string)statement["predicateType"]!);
        Assert.Equal(["config.json", "weights.bin"], statement["predicate"]!["resources"]!.AsArray().Select(r => (string)r!["name"]!));
    }

    [Fact]
    public void EachWayAManifestCanFailItsSignatureIsRefusedWithItsReason()
    {
        var manifest = Manifest();
        byte[] bundle = ManifestSignature.Sign(manifest, _publisher);

        Assert.Equal(SignatureProblem.NoSignature, Refusal(manifest, null, _publisher));
        Assert.Equal(SignatureProblem.UnknownKey, Refusal(manifest, ManifestSignature.Sign(manifest, _stranger), _publisher));
        var altered = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(manifest).Replace("\"size\": 10,", "\"size\": 11,")); // one byte changed after signing
        Assert.Equal(manifest.Length, altered.Length);
        Assert.NotEqual(manifest, altered);
        Assert.Equal(SignatureProblem.DigestMismatch, Refusal(altered, bundle, _publisher));
        // The same files with another chunk list, under the first one's signature.
        Assert.Equal(SignatureProblem.DigestMismatch, Refusal(Manifest(chunkSeed: 50), bundle, _publisher));
        // The signature of another manifest (another version, validly signed by the publisher).
        Assert.Equal(SignatureProblem.DigestMismatch, Refusal(Manifest("v2"), bundle, _publisher));
        Assert.Equal(SignatureProblem.OtherArtifact, Refusal(manifest, ManifestSignature.Sign(Manifest(artifact: "gpt"), _publisher), _publisher));
        Assert.Equal(SignatureProblem.MalformedBundle, Refusal(manifest, bundle[..(bundle.Length / 2)], _publisher));
        Assert.Equal(SignatureProblem.MalformedBundle, Refusal(manifest, "[]"u8.ToArray(), _publisher));
        // A statement swapped in under the old signature no longer verifies.
        var forged = JsonNode.Parse(bundle)!;
        var otherStatement = JsonNode.Parse(ManifestSignature.Sign(Manifest("v2"), _stranger))!["dsseEnvelope"]!["payload"]!.GetValue<string>();
        forged["dsseEnvelope"]!["payload"] = otherStatement;
        Assert.Equal(SignatureProblem.UnknownKey, Refusal(Manifest("v2"), Encoding.UTF8.GetBytes(forged.ToJsonString()), _publisher));

        var message = Assert.Throws<ManifestSignatureException>(() => ManifestSignature.Verify("m.json", altered, bundle, [_publisher])).Message;
        Assert.Contains("m.json", message);
        Assert.Contains("changed after signing", message);
    }

    /// <summary>An implementation not written here checks the DSSE signature: openssl, over the pre-authentication encoding.</summary>
    [Fact]
    public async Task OpensslVerifiesTheSignatureWithThePublicKey()
    {
        byte[] bundle = ManifestSignature.Sign(Manifest(), _publisher);
        var envelope = JsonNode.Parse(bundle)!["dsseEnvelope"]!;
        byte[] payload = Convert.FromBase64String((string)envelope["payload"]!);
        string pae = Path.Combine(_work.FullName, "pae.bin"), sig = Path.Combine(_work.FullName, "sig.der"), pub = Path.Combine(_work.FullName, "pub.pem");
        await File.WriteAllBytesAsync(pae, ManifestSignature.PreAuthenticationEncoding((string)envelope["payloadType"]!, payload));
        await File.WriteAllBytesAsync(sig, Convert.FromBase64String((string)envelope["signatures"]![0]!["sig"]!));
        await File.WriteAllTextAsync(pub, _publisher.ExportSubjectPublicKeyInfoPem());
        Assert.Equal((0, "Verified OK"), await OpensslAsync(pub, sig, pae));
        await File.WriteAllTextAsync(pub, _stranger.ExportSubjectPublicKeyInfoPem());
        Assert.NotEqual(0, (await OpensslAsync(pub, sig, pae)).Code);
    }

    private static async Task<(int Code, string Output)> OpensslAsync(string pub, string sig, string data)
    {
        var psi = new ProcessStartInfo("openssl", ["dgst", "-sha256", "-verify", pub, "-signature", sig, data]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string output = await p.StandardOutput.ReadToEndAsync();
        await p.WaitForExitAsync();
        return (p.ExitCode, output.Trim());
    }
}
