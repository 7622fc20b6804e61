using System.CommandLine;
using System.Net.Sockets;
using System.Text.Json;
using MlArtifactFs.Mounting;

namespace Mlfs.Commands;

/// <summary>`mlfs status`: ask a running mount for its numbers.</summary>
internal static class StatusCommand
{
    public static readonly Option<bool> Json = new("--json") { Description = "print JSON" };
    public static readonly Argument<string> MountPoint = new("MOUNTPOINT") { Description = "where the model is mounted" };

    public static Command Create()
    {
        var command = new Command("status", "Show a running mount: files, bytes cached, chunks fetched, hit ratio.") { Json, MountPoint };
        command.SetAction((parse, cancel) => RunAsync(parse, cancel));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken cancel)
    {
        string mountPoint = parse.GetValue(MountPoint)!;
        var response = await Control.SendAsync(mountPoint, new ControlRequest { Command = "status" }, cancel).ConfigureAwait(false);
        if (response is null) return ExitCodes.NotMounted;
        if (!response.Ok || response.Status is not { } s)
        {
            Console.Error.WriteLine($"mlfs status: {response.Error}");
            return ExitCodes.Failure;
        }
        if (parse.GetValue(Json))
        {
            Console.WriteLine(JsonSerializer.Serialize(s, ControlJsonContext.Default.MountStatus));
            return ExitCodes.Success;
        }
        Console.WriteLine($"mount point:     {s.MountPoint}");
        Console.WriteLine($"model:           {s.ArtifactId} {s.Version} ({s.Files} files, {Sizes.Format(s.TotalBytes)})");
        Console.WriteLine($"signature:       {(s.SignedBy is { } key ? $"verified, signed by key {key}" : "unsigned (the mount was started without --verify-key)")}");
        Console.WriteLine($"cache:           {s.CacheDirectory}: {s.CacheBlobs} blobs, {Sizes.Format(s.CacheBytes)} of {Sizes.Format(s.CacheBound)}"
                          + (s.CacheBound != s.CacheCapacity ? $" (the directory's bound; this mount's --cache-size is {Sizes.Format(s.CacheCapacity)})" : ""));
        if (s.Count("chunks_evicted") + s.Count("blobs_evicted") > 0)
            Console.WriteLine($"evicted:         {s.Count("chunks_evicted")} chunks and {s.Count("blobs_evicted")} whole files, {Sizes.Format(s.Count("bytes_evicted"))} freed");
        Console.WriteLine($"fetched:         {s.Count("chunks_fetched")} chunks, {Sizes.Format(s.Count("bytes_fetched"))} from storage in {s.Count("requests")} requests ({s.Count("retries")} retries, {s.Count("fetch_failures")} failures)");
        if (s.Fleet is { } fleet)
        {
            Console.WriteLine($"fleet:           serving on {fleet.Listen} as {fleet.Advertise}; {fleet.ChunksHeld} chunks held, {fleet.ChunksServed} served to peers ({Sizes.Format(fleet.BytesServed)}), {fleet.Unauthorized} refused without the token; index {fleet.Index}");
            Console.WriteLine($"from peers:      {s.Count("chunks_from_peers")} chunks, {Sizes.Format(s.Count("bytes_from_peers"))} ({s.Count("peer_failures")} peer failures, {s.Count("fleet_waits")} waits for another node, {s.Count("fleet_hedges")} hedged to storage)");
            foreach (var (peer, p) in fleet.Peers.OrderBy(p => p.Key, StringComparer.Ordinal))
                Console.WriteLine($"  peer {peer,-21} {p.Chunks} chunks, {Sizes.Format(p.Bytes)}, {p.Failures} failures");
        }
        long opens = s.Count("opens"), passthrough = s.Count("passthrough_opens");
        Console.WriteLine($"opens:           {opens} ({passthrough} in passthrough: the kernel reads those files, up to {Sizes.Format(s.Count("passthrough_file_bytes"))}, from the cache without the daemon)");
        Console.WriteLine(s.HitRatio is { } ratio
            ? $"daemon reads:    {s.Count("cache_hits")} hits, {s.Count("cache_misses")} misses, {Sizes.Format(s.Count("bytes_read"))} (hit ratio {ratio:P1}, over the reads of the {opens - passthrough} opens the daemon saw)"
            : $"daemon reads:    none reached the daemon{(passthrough > 0 ? " (every open was served by passthrough)" : "")}");
        Console.WriteLine($"shared:          {s.Count("chunks_deduplicated")} chunks ({Sizes.Format(s.Count("bytes_deduplicated"))}) copied from duplicates, {s.Count("chunks_from_other_processes")} fetched by other processes; index {s.ChunkIndex}");
        Console.WriteLine($"open files:      {s.OpenFiles} (passthrough {(s.Passthrough ? "on" : "off")})");
        if (s.IgnoredIndexEntries > 0 || s.DamagedChunksDropped > 0)
            Console.WriteLine($"distrusted:      {s.IgnoredIndexEntries} index entries ignored, {s.DamagedChunksDropped} damaged cache chunks dropped and fetched again");
        if (s.Count("unverified_bytes_served") > 0)
            Console.WriteLine($"unverified:      {Sizes.Format(s.Count("unverified_bytes_served"))} served before whole-file verification (files without chunk hashes)");
        return ExitCodes.Success;
    }
}

internal static class Control
{
    /// <summary>Sends a request to the mount at <paramref name="mountPoint"/>; prints why and returns null when none answers.</summary>
    public static async Task<ControlResponse?> SendAsync(string mountPoint, ControlRequest request, CancellationToken cancel)
    {
        string socket = ControlServer.DefaultPath(mountPoint);
        try
        {
            return await ControlServer.SendAsync(socket, request, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            Console.Error.WriteLine($"mlfs: no running mlfs mount answers for {mountPoint} (control socket {socket}: {e.Message})");
            return null;
        }
    }
}
