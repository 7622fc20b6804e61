using System.Runtime.CompilerServices;
using MlArtifactFs.Cache;
using MlArtifactFs.Index;

namespace MlArtifactFs.Fetching;

/// <summary>
/// What a blob needs once when it is opened: its recorded chunks published to the chunk index (so other
/// files and processes can find them), and a background check of what the cache already holds of it
/// (every recorded chunk hashed against this blob's hashes, damage dropped), so a file cached whole by an
/// earlier run opens in passthrough. Each happens once per open blob.
/// </summary>
internal sealed class CachedFileChecks(BlobCache cache, IChunkIndex index, ChunkSink sink, CancellationToken shutdown)
{
    private sealed class Done
    {
        public int Registered, Checking;
    }

    private readonly ConditionalWeakTable<CachedBlob, Done> _done = new();

    /// <summary>Publishes the recorded chunks of a blob to the index (once per opened blob).</summary>
    public void Register(CachedBlob blob)
    {
        if (blob is not ChunkedBlob chunked || Interlocked.Exchange(ref _done.GetOrCreateValue(blob).Registered, 1) != 0) return;
        var d = blob.Descriptor;
        var chunks = new List<(int, ChunkId)>();
        for (int c = 0; c < d.ChunkCount; c++)
            if (chunked.IsServable(c) || chunked.IsRecorded(c)) chunks.Add((c, d.ChunkId(c)));
        if (chunks.Count > 0) index.Add(blob.Name, chunks);
    }

    /// <summary>Checks what the cache holds of a blob in the background, holding the blob open until done.</summary>
    public void Scrub(CachedBlob blob, string fileName)
    {
        cache.Retain(blob); // held until the check ends, like a run
        _ = ScrubAsync(blob, fileName, CancellationToken.None).ContinueWith(_ => cache.Release(blob), TaskScheduler.Default);
    }

    /// <summary>
    /// <see cref="Scrub"/>, awaitable: completes when every recorded chunk (or a shared whole file) was
    /// hashed against this blob's hashes, at once when there is nothing to check or a check already runs.
    /// The caller holds the blob open until it completes.
    /// </summary>
    public Task ScrubAsync(CachedBlob blob, string fileName, CancellationToken cancel)
    {
        if (!blob.AllRecorded || blob.IsComplete || Interlocked.Exchange(ref _done.GetOrCreateValue(blob).Checking, 1) != 0) return Task.CompletedTask;
        if (blob is WholeBlob whole) return whole.TryAdoptWhole(cache.PrivateDirectory);
        var chunked = (ChunkedBlob)blob;
        return Task.Run(() =>
        {
            for (int c = 0; c < blob.Descriptor.ChunkCount && !shutdown.IsCancellationRequested && !cancel.IsCancellationRequested; c++)
                sink.TryAdopt(chunked, c, fileName);
        }, CancellationToken.None);
    }
}
