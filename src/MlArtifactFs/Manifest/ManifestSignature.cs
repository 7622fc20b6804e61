using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MlArtifactFs.Manifest;

/// <summary>Why a manifest's signature was refused (each has its own message; the CLI maps them to one exit code).</summary>
public enum SignatureProblem
{
    NoSignature,
    MalformedBundle,
    UnknownKey,
    BadSignature,
    DigestMismatch,
    OtherArtifact,
}

/// <summary>A manifest whose signature does not hold: nothing is mounted or switched.</summary>
public sealed class ManifestSignatureException(string manifest, SignatureProblem problem, string reason)
    : Exception($"{manifest}: {reason}; refusing it")
{
    public string Manifest { get; } = manifest;
    public SignatureProblem Problem { get; } = problem;
}

/// <summary>
/// Signed manifests, in the shape of the OpenSSF Model Signing format's key-based flow: a Sigstore bundle
/// (v0.3 JSON) whose DSSE envelope signs an in-toto Statement v1. The statement's one subject is the manifest
/// itself (name <c>artifact_id@version</c>, digest the SHA-256 of the manifest's bytes), so chunk lists are
/// covered, not only files; its predicate lists every file's path and sha256 the way the format's
/// <c>https://model_signing/signature/v1.0</c> predicate lists resources, for other tools to cross-check.
/// Keys are ECDSA P-256 (PEM); the signature is ECDSA-SHA256 (DER) over DSSE's pre-authentication encoding.
/// </summary>
public static class ManifestSignature
{
    public const string BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json";
    public const string PayloadType = "application/vnd.in-toto+json";
    public const string StatementType = "https://in-toto.io/Statement/v1";
    public const string PredicateType = "https://model_signing/signature/v1.0";

    /// <summary>Largest bundle read (it lists every file once; 100,000 files fit in a few MB).</summary>
    public const int MaxBundleBytes = 64 << 20;

    /// <summary>Where a manifest's signature lives: beside it, with <c>.sig</c> appended.</summary>
    public static string SignaturePathFor(string manifestPath) => manifestPath + ".sig";

    /// <summary>The bundle for <paramref name="manifestBytes"/> (a manifest that loads), signed by <paramref name="key"/>.</summary>
    public static byte[] Sign(ReadOnlySpan<byte> manifestBytes, ECDsa key)
    {
        var manifest = ManifestLoader.Parse(manifestBytes.ToArray(), "the manifest to sign");
        var resources = new JsonArray();
        foreach (var f in manifest.Files!.OrderBy(f => f.Path, StringComparer.Ordinal))
            resources.Add((JsonNode)new JsonObject { ["name"] = f.Path, ["algorithm"] = "sha256", ["digest"] = f.Sha256 });
        var statement = new JsonObject
        {
            ["_type"] = StatementType,
            ["subject"] = new JsonArray(new JsonObject
            {
                ["name"] = $"{manifest.ArtifactId}@{manifest.Version}",
                ["digest"] = new JsonObject { ["sha256"] = Convert.ToHexStringLower(SHA256.HashData(manifestBytes)) },
            }),
            ["predicateType"] = PredicateType,
            ["predicate"] = new JsonObject
            {
                ["serialization"] = new JsonObject { ["method"] = "mlfs-manifest", ["chunk_hash"] = manifest.ChunkHash ?? "sha256", ["chunk_size"] = manifest.ChunkSize },
                ["resources"] = resources,
            },
        };
        byte[] payload = Encoding.UTF8.GetBytes(statement.ToJsonString());
        byte[] signature = key.SignData(PreAuthenticationEncoding(PayloadType, payload), HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence);
        var bundle = new JsonObject
        {
            ["mediaType"] = BundleMediaType,
            ["verificationMaterial"] = new JsonObject { ["publicKey"] = new JsonObject { ["hint"] = KeyHint(key) } },
            ["dsseEnvelope"] = new JsonObject
            {
                ["payload"] = Convert.ToBase64String(payload),
                ["payloadType"] = PayloadType,
                ["signatures"] = new JsonArray(new JsonObject { ["sig"] = Convert.ToBase64String(signature), ["keyid"] = "" }),
            },
        };
        return Encoding.UTF8.GetBytes(bundle.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Checks <paramref name="bundle"/> (null: there is none at <paramref name="signatureName"/>) over <paramref name="manifestBytes"/> against the
    /// trusted keys; returns the hint of the key that verified. Throws <see cref="ManifestSignatureException"/>
    /// naming <paramref name="manifestName"/> and the reason otherwise.
    /// </summary>
    public static string Verify(string manifestName, ReadOnlySpan<byte> manifestBytes, byte[]? bundle, IReadOnlyList<ECDsa> keys,
        string? signatureName = null)
    {
        if (bundle is null)
            throw new ManifestSignatureException(manifestName, SignatureProblem.NoSignature,
                $"it is not signed ({signatureName ?? "the signature beside it"} does not exist) and the mount requires a signature (--verify-key)");
        if (bundle.Length > MaxBundleBytes) throw Malformed($"its signature is larger than {MaxBundleBytes >> 20} MiB");
        byte[] payload, signature;
        try
        {
            var root = JsonNode.Parse(bundle)?.AsObject() ?? throw new JsonException("not an object");
            if ((string?)root["mediaType"] != BundleMediaType) throw new JsonException($"mediaType is not {BundleMediaType}");
            var envelope = root["dsseEnvelope"]?.AsObject() ?? throw new JsonException("no dsseEnvelope");
            if ((string?)envelope["payloadType"] != PayloadType) throw new JsonException($"payloadType is not {PayloadType}");
            payload = Convert.FromBase64String((string?)envelope["payload"] ?? throw new JsonException("no payload"));
            var signatures = envelope["signatures"]?.AsArray() ?? throw new JsonException("no signatures");
            if (signatures.Count != 1) throw new JsonException($"{signatures.Count} signatures (one expected)");
            signature = Convert.FromBase64String((string?)signatures[0]?["sig"] ?? throw new JsonException("no sig"));
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException)
        {
            throw Malformed($"its signature is not a Sigstore bundle mlfs can read ({e.Message})");
        }

        byte[] signed = PreAuthenticationEncoding(PayloadType, payload);
        string? hint = null;
        foreach (var key in keys)
        {
            bool valid;
            try { valid = key.VerifyData(signed, signature, HashAlgorithmName.SHA256, DSASignatureFormat.Rfc3279DerSequence); }
            catch (CryptographicException) { valid = false; } // not a DER signature at all
            if (valid) { hint = KeyHint(key); break; }
        }
        if (hint is null)
            throw new ManifestSignatureException(manifestName, SignatureProblem.UnknownKey,
                $"its signature does not verify with any of the {keys.Count} trusted key(s) (signed by another key, or altered)");

        // The signature holds: now what it says must be this manifest.
        string subjectName, subjectDigest;
        try
        {
            var statement = JsonNode.Parse(payload)?.AsObject() ?? throw new JsonException("not an object");
            if ((string?)statement["_type"] != StatementType) throw new JsonException($"_type is not {StatementType}");
            var subjects = statement["subject"]?.AsArray() ?? throw new JsonException("no subject");
            if (subjects.Count != 1) throw new JsonException($"{subjects.Count} subjects (one expected)");
            subjectName = (string?)subjects[0]?["name"] ?? throw new JsonException("no subject name");
            subjectDigest = (string?)subjects[0]?["digest"]?["sha256"] ?? throw new JsonException("no sha256 digest");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw Malformed($"its signed statement cannot be read ({e.Message})");
        }
        string actual = Convert.ToHexStringLower(SHA256.HashData(manifestBytes));
        if (!string.Equals(subjectDigest, actual, StringComparison.OrdinalIgnoreCase))
        {
            var manifest = TryLoad(manifestBytes);
            string ours = manifest is null ? "" : $"{manifest.ArtifactId}@{manifest.Version}";
            if (manifest is not null && subjectName != ours)
                throw new ManifestSignatureException(manifestName,
                    subjectName.StartsWith(manifest.ArtifactId + "@", StringComparison.Ordinal) ? SignatureProblem.DigestMismatch : SignatureProblem.OtherArtifact,
                    $"its signature is for {Printable(subjectName)}, not for {ours} (the signature of another manifest)");
            throw new ManifestSignatureException(manifestName, SignatureProblem.DigestMismatch,
                $"its signature is for a manifest with SHA-256 {Printable(subjectDigest)[..Math.Min(16, subjectDigest.Length)]}…, this one has {actual[..16]}… (changed after signing, or the signature of another manifest)");
        }
        return hint;

        ManifestSignatureException Malformed(string reason) => new(manifestName, SignatureProblem.MalformedBundle, reason);
    }

    /// <summary>An ECDSA P-256 key from PEM (private or public); the message names the file.</summary>
    public static ECDsa LoadKey(string path, bool requirePrivate)
    {
        string pem;
        try { pem = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ArgumentException($"cannot read the key {path}: {e.Message}"); }
        var key = ECDsa.Create();
        try { key.ImportFromPem(pem); }
        catch (Exception e) when (e is ArgumentException or CryptographicException)
        {
            key.Dispose();
            throw new ArgumentException($"{path} is not an ECDSA key in PEM ({e.Message})");
        }
        var parameters = key.ExportParameters(false);
        if (key.KeySize != 256 || parameters.Curve.Oid?.Value != "1.2.840.10045.3.1.7")
        {
            key.Dispose();
            throw new ArgumentException($"{path} is not an ECDSA P-256 key");
        }
        if (requirePrivate)
        {
            try { key.ExportParameters(true); }
            catch (CryptographicException)
            {
                key.Dispose();
                throw new ArgumentException($"{path} holds no private key");
            }
        }
        return key;
    }

    /// <summary>DSSE's PAE: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.</summary>
    public static byte[] PreAuthenticationEncoding(string payloadType, byte[] payload)
    {
        byte[] type = Encoding.UTF8.GetBytes(payloadType);
        byte[] head = Encoding.ASCII.GetBytes($"DSSEv1 {type.Length} {payloadType} {payload.Length} ");
        return [.. head, .. payload];
    }

    /// <summary>A key's short name in logs and status: SHA-256 of its SubjectPublicKeyInfo, 16 hex digits.</summary>
    public static string KeyHint(ECDsa key) => Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()))[..16];

    private static ModelManifest? TryLoad(ReadOnlySpan<byte> bytes)
    {
        try { return ManifestLoader.Parse(bytes.ToArray()); }
        catch (ManifestException) { return null; }
    }

    private static string Printable(string s) => new([.. s.Take(200).Select(c => char.IsControl(c) ? '?' : c)]);
}
