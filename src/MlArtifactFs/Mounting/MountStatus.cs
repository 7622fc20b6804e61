using System.Text.Json;
using System.Text.Json.Serialization;
using MlArtifactFs.Fleet;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Mounting;

/// <summary>
/// What `mlfs status` shows of a running mount. The counters are not listed here: every counter with a
/// status key (<see cref="Counters"/>) travels as a top-level field of the same name
/// (<see cref="Counters"/>), so a counter is added in one place.
/// </summary>
public sealed record MountStatus
{
    [JsonPropertyName("mount_point")] public string MountPoint { get; init; } = "";
    [JsonPropertyName("artifact_id")] public string ArtifactId { get; init; } = "";
    [JsonPropertyName("version")] public string Version { get; init; } = "";
    [JsonPropertyName("files")] public int Files { get; init; }
    [JsonPropertyName("total_bytes")] public long TotalBytes { get; init; }
    [JsonPropertyName("cache_dir")] public string CacheDirectory { get; init; } = "";
    [JsonPropertyName("cache_blobs")] public int CacheBlobs { get; init; }
    [JsonPropertyName("cache_bytes")] public long CacheBytes { get; init; }
    [JsonPropertyName("cache_capacity")] public long CacheCapacity { get; init; }
    /// <summary>The bound in force on the cache directory (the smallest --cache-size of the processes using it).</summary>
    [JsonPropertyName("cache_bound")] public long CacheBound { get; init; }
    /// <summary>Hits over the reads the daemon saw (null when it saw none: passthrough reads never reach it).</summary>
    [JsonPropertyName("hit_ratio")] public double? HitRatio { get; init; }
    /// <summary>The share of opens whose reads the daemon sees (the others are served by the kernel, passthrough).</summary>
    [JsonPropertyName("daemon_open_share")] public double? DaemonOpenShare { get; init; }
    [JsonPropertyName("open_files")] public int OpenFiles { get; init; }
    [JsonPropertyName("passthrough")] public bool Passthrough { get; init; }
    /// <summary>READs of complete files answered by splicing from the cache file into /dev/fuse (no passthrough).</summary>
    [JsonPropertyName("spliced_reads")] public long SplicedReads { get; init; }
    [JsonPropertyName("chunk_index")] public string ChunkIndex { get; init; } = "";
    /// <summary>Index entries (Redis or in-process) that named nothing usable and were ignored: input, never trusted.</summary>
    [JsonPropertyName("ignored_index_entries")] public long IgnoredIndexEntries { get; init; }
    /// <summary>Recorded chunks found damaged (or forged) in the cache, dropped and fetched again.</summary>
    [JsonPropertyName("damaged_chunks_dropped")] public long DamagedChunksDropped { get; init; }
    /// <summary>Failures by kind (the mlfs.errors metric), those that happened.</summary>
    [JsonPropertyName("errors")] public Dictionary<string, long> Errors { get; init; } = [];
    [JsonPropertyName("fleet")] public FleetStatus? Fleet { get; init; }
    /// <summary>The key (hint: 16 hex digits of its SHA-256) whose signature the served manifest carries; null: unsigned (no --verify-key).</summary>
    [JsonPropertyName("signed_by")] public string? SignedBy { get; init; }

    /// <summary>The counters, by status key (see <see cref="Counters"/>).</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement> Counters { get; set; } = [];

    /// <summary>A counter by its status key (0 when the mount did not send it).</summary>
    public long Count(string statusKey) =>
        Counters.TryGetValue(statusKey, out var value) && value.TryGetInt64(out long n) ? n : 0;

    public static Dictionary<string, JsonElement> FromCounters(CounterSet counters) =>
        counters.ForStatus().ToDictionary(kv => kv.Key, kv => JsonSerializer.SerializeToElement(kv.Value, ControlJsonContext.Default.Int64));
}

public sealed record ControlRequest
{
    [JsonPropertyName("command")] public string Command { get; init; } = "";
    [JsonPropertyName("manifest")] public string? Manifest { get; init; }
}

public sealed record ControlResponse
{
    [JsonPropertyName("ok")] public bool Ok { get; init; }
    [JsonPropertyName("error")] public string? Error { get; init; }
    /// <summary>The switch was refused because the manifest's signature did not hold (a distinct exit code).</summary>
    [JsonPropertyName("signature_refused")] public bool SignatureRefused { get; init; }
    [JsonPropertyName("status")] public MountStatus? Status { get; init; }
    [JsonPropertyName("switch_ms")] public double? SwitchMilliseconds { get; init; }
    [JsonPropertyName("bytes_fetched")] public long? BytesFetched { get; init; }
}
