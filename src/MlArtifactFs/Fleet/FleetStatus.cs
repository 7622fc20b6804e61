using System.Text.Json.Serialization;

namespace MlArtifactFs.Fleet;

/// <summary>What `mlfs status` shows of fleet mode: the peer server, the holders index, and each peer.</summary>
public sealed record FleetStatus
{
    [JsonPropertyName("listen")] public string Listen { get; init; } = "";
    [JsonPropertyName("advertise")] public string Advertise { get; init; } = "";
    [JsonPropertyName("index")] public string Index { get; init; } = "";
    [JsonPropertyName("chunks_held")] public int ChunksHeld { get; init; }
    [JsonPropertyName("chunks_served")] public long ChunksServed { get; init; }
    [JsonPropertyName("bytes_served")] public long BytesServed { get; init; }
    [JsonPropertyName("unauthorized_requests")] public long Unauthorized { get; init; }
    [JsonPropertyName("ignored_holder_entries")] public long IgnoredHolderEntries { get; init; }
    [JsonPropertyName("peers")] public Dictionary<string, PeerStatus> Peers { get; init; } = [];
}

public sealed record PeerStatus
{
    [JsonPropertyName("chunks")] public long Chunks { get; init; }
    [JsonPropertyName("bytes")] public long Bytes { get; init; }
    [JsonPropertyName("failures")] public long Failures { get; init; }
}
