using System.Net;

namespace MlArtifactFs.Fleet;

/// <summary>
/// Fleet mode: this mount serves the verified chunks it holds to other mounts (<see cref="PeerServer"/>)
/// and takes cold chunks from the mounts that hold them (<see cref="PeerClient"/>) before going to
/// storage, with Redis as the chunk -> holders index (<see cref="FleetIndex"/>). Peers are never
/// trusted for content: every byte from one is hashed against the reading manifest's chunk SHA-256.
/// The token only decides who may ask.
/// </summary>
public sealed record FleetOptions
{
    /// <summary>Where the peer server listens (only there).</summary>
    public required IPEndPoint Listen { get; init; }

    /// <summary>The address other nodes reach this one at (an IP literal and port).</summary>
    public required IPEndPoint Advertise { get; init; }

    /// <summary>The fleet's shared secret: required on every request to a peer, and the namespace of its Redis keys.</summary>
    public required string Token { get; init; }

    /// <summary>How long a holder entry lives without being refreshed (a dead node drops out after this).</summary>
    public TimeSpan HolderTtl { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a node waits for the chunk another node leased from storage before it hedges to storage itself.</summary>
    public TimeSpan PeerWait { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A peer that sends no byte for this long is given up on (and skipped for <see cref="Penalty"/>).</summary>
    public TimeSpan PeerTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long a peer that failed (wrong bytes, stall, refusal) is skipped.</summary>
    public TimeSpan Penalty { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Lease on fetching a chunk from storage for the fleet (longer than any one chunk's GET should take).</summary>
    public TimeSpan LeaseTime { get; init; } = TimeSpan.FromSeconds(30);

    public const int MinTokenLength = 16;

    /// <summary>Parses "ADDR:PORT" (an IP literal; [v6]:port for IPv6).</summary>
    public static IPEndPoint ParseEndPoint(string text, string option)
    {
        if (!IPEndPoint.TryParse(text, out var endpoint) || endpoint.Port == 0)
            throw new ArgumentException($"{option} \"{text}\" is not ADDR:PORT with an IP address (e.g. 10.0.0.5:7070)");
        return endpoint;
    }
}
