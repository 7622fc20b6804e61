using MlArtifactFs.Cache;

namespace MlArtifactFs.Fetching.Sources;

/// <summary>
/// One tier a run takes chunks from (mountpoint-s3's data_cache trait): the local cache, another
/// process's fetch, the fleet, storage. A source gets what it can of <see cref="ChunkJob.Missing"/>
/// through the <see cref="ChunkSink"/> (verified, staged, stored) and takes those chunks off the list;
/// what it cannot get stays for the next source. It never calls back into the scheduler.
/// </summary>
internal interface IChunkSource
{
    Task FetchAsync(ChunkJob job);

    /// <summary>
    /// Chunks this source set aside (<see cref="ChunkJob.Defer"/>: someone else is fetching them) are
    /// awaited here, bounded, once the run fetched everything it could itself; returns those that never
    /// came, to go on down the chain.
    /// </summary>
    Task<List<int>> AwaitDeferredAsync(ChunkJob job, List<int> chunks) => Task.FromResult(chunks);
}

/// <summary>
/// What one run of a chunked blob still needs, handed down the chain: the chunks not servable yet (in
/// order), the memory budget every chunk is received and verified in, chunks set aside to be awaited,
/// and what to undo when the run ends (leases).
/// </summary>
internal sealed class ChunkJob(ChunkRun run, ChunkedBlob blob, ChunkMemory memory, List<int> missing, CancellationToken stopping)
{
    private readonly List<(IChunkSource Source, List<int> Chunks)> _deferred = [];
    private readonly List<Action> _atEnd = [];

    public ChunkRun Run { get; } = run;
    public ChunkedBlob Blob { get; } = blob;
    public BlobDescriptor Descriptor => Blob.Descriptor;
    public string FileName => Run.FileName;

    /// <summary>
    /// A buffer for one chunk, exactly its length (page-aligned native memory). Hand it to the sink with the
    /// verified chunk (it then belongs to the blob) or dispose it.
    /// </summary>
    public ValueTask<ChunkBuffer> RentAsync(int chunk) => memory.RentAsync(Descriptor.ChunkLength(chunk), stopping);

    /// <summary>Chunks still to get, ascending.</summary>
    public List<int> Missing { get; internal set; } = missing;

    /// <summary>Someone else is fetching these: <paramref name="source"/> awaits them after the rest of the run.</summary>
    public void Defer(IChunkSource source, List<int> chunks)
    {
        Missing.RemoveAll(chunks.Contains);
        _deferred.Add((source, chunks));
    }

    /// <summary>Runs when the run ends, however it ends (a lease's release).</summary>
    public void AtEnd(Action undo) => _atEnd.Add(undo);

    internal bool TakeDeferred(out IChunkSource source, out List<int> chunks)
    {
        (source, chunks) = _deferred.Count > 0 ? _deferred[^1] : default;
        if (_deferred.Count == 0) return false;
        _deferred.RemoveAt(_deferred.Count - 1);
        return true;
    }

    internal void End()
    {
        foreach (var undo in _atEnd) undo();
    }

    /// <summary>Contiguous stretches [First, Last] of a list of ascending chunks.</summary>
    public static IEnumerable<(int First, int Last)> Segments(List<int> chunks)
    {
        for (int i = 0; i < chunks.Count;)
        {
            int j = i;
            while (j + 1 < chunks.Count && chunks[j + 1] == chunks[j] + 1) j++;
            yield return (chunks[i], chunks[j]);
            i = j + 1;
        }
    }
}

/// <summary>
/// The tiers in order, composed once at mount set-up. A run goes down the chain until nothing is
/// missing; chunks a source set aside are awaited last (innermost first), so two processes or nodes
/// never wait on each other in a circle, and what never arrives goes on down from the next source.
/// </summary>
internal sealed class SourceChain(IReadOnlyList<IChunkSource> sources)
{
    public IReadOnlyList<IChunkSource> Sources => sources;

    public async Task FetchAsync(ChunkJob job)
    {
        await FetchFromAsync(0, job).ConfigureAwait(false);
        while (job.TakeDeferred(out var source, out var chunks))
        {
            job.Missing = await source.AwaitDeferredAsync(job, chunks).ConfigureAwait(false);
            await FetchFromAsync(IndexOf(source) + 1, job).ConfigureAwait(false);
        }
    }

    private async Task FetchFromAsync(int first, ChunkJob job)
    {
        for (int i = first; i < sources.Count && job.Missing.Count > 0; i++)
            await sources[i].FetchAsync(job).ConfigureAwait(false);
        if (job.Missing.Count > 0)
            throw new InvalidOperationException($"{job.FileName}: no source could get chunks {string.Join(",", job.Missing)}");
    }

    private int IndexOf(IChunkSource source)
    {
        for (int i = 0; i < sources.Count; i++)
            if (ReferenceEquals(sources[i], source)) return i;
        throw new ArgumentException("a source that is not in the chain deferred chunks", nameof(source));
    }
}
