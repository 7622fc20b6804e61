using System.Text.Json;
using System.Text.Json.Serialization;

namespace MlArtifactFs.Manifest;

/// <summary>
/// The JSON manifest that describes one version of a model: which files exist, where their bytes
/// live and what they hash to. The seed format (no <c>chunk_size</c>, no <c>chunks</c>) must keep
/// loading unchanged; the chunk fields are optional additions that enable per-chunk verification
/// and cross-version dedup. Unknown fields are kept in <see cref="Extra"/> so a round trip loses nothing.
/// Instances are produced by <see cref="ManifestLoader"/>, which validates them; do not trust one
/// deserialised any other way.
/// </summary>
public sealed class ModelManifest
{
    /// <summary>Fetch-request size for seed manifests, which carry no chunk size (the seed's 16 MiB).</summary>
    public const long DefaultChunkSize = 16L << 20;

    [JsonPropertyName("artifact_id")] public string? ArtifactId { get; set; }
    [JsonPropertyName("version")] public string? Version { get; set; }
    [JsonPropertyName("mount_path")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? MountPath { get; set; }

    [JsonPropertyName("chunk_size")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? ChunkSize { get; set; }

    /// <summary>The algorithm of the <c>chunks</c> hashes: "sha256" (the default when absent) or "blake3".</summary>
    [JsonPropertyName("chunk_hash")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? ChunkHash { get; set; }

    [JsonPropertyName("prefetch")] public List<string>? Prefetch { get; set; }
    [JsonPropertyName("files")] public List<ManifestFile>? Files { get; set; }

    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }

    /// <summary>Drops the optional chunk fields, leaving exactly the seed's format.</summary>
    public void ToSeedFormat()
    {
        ChunkSize = null;
        ChunkHash = null;
        foreach (var f in Files ?? []) f.Chunks = null;
    }

    /// <summary>The algorithm of the chunk hashes (validated by the loader).</summary>
    [JsonIgnore] public Cache.ChunkHashAlgorithm ChunkHashAlgorithm => ChunkHash == "blake3" ? Cache.ChunkHashAlgorithm.Blake3 : Cache.ChunkHashAlgorithm.Sha256;

    /// <summary>The chunk size in force: the manifest's, or the seed default.</summary>
    [JsonIgnore] public long EffectiveChunkSize => ChunkSize ?? DefaultChunkSize;
}

public sealed class ManifestFile
{
    [JsonPropertyName("path")] public string? Path { get; set; }
    [JsonPropertyName("url")] public string? Url { get; set; }
    [JsonPropertyName("size")] public long? Size { get; set; }
    [JsonPropertyName("sha256")] public string? Sha256 { get; set; }
    [JsonPropertyName("compression")] public string? Compression { get; set; }

    /// <summary>The hash (the manifest's <c>chunk_hash</c> algorithm) of each <c>chunk_size</c> range, in order; absent in seed manifests.</summary>
    [JsonPropertyName("chunks")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ChunkDigests? Chunks { get; set; }

    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = true, AllowTrailingCommas = false,
    ReadCommentHandling = JsonCommentHandling.Disallow)]
[JsonSerializable(typeof(ModelManifest))]
internal sealed partial class ManifestJsonContext : JsonSerializerContext;
