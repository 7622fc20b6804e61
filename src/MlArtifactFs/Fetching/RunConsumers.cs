using MlArtifactFs.Cache;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Chunked blobs: each chunk streams into a buffer of its own size, is verified there, and only then
/// written to the shared cache file and released to readers. A chunk that fails its hash is never
/// written; the retry resumes at its start.
/// </summary>
internal sealed class VerifyingConsumer(ChunkRun run, Memory<byte> chunkBuffer, Action<ChunkRun, VerifiedChunk> verified) : IRangeConsumer
{
    private readonly BlobDescriptor _d = run.Blob.Descriptor;
    private long _verifiedUpTo = -1; // end of the last chunk verified by this consumer

    public Memory<byte> BufferAt(long position)
    {
        int chunk = _d.ChunkOf(position);
        int inChunk = (int)(position - _d.ChunkStart(chunk));
        return chunkBuffer[inChunk.._d.ChunkLength(chunk)];
    }

    public void Arrived(long position, int count)
    {
        if (_verifiedUpTo < 0) _verifiedUpTo = _d.ChunkStart(_d.ChunkOf(position));
        long end = position + count;
        int chunk = _d.ChunkOf(position);
        if (end != _d.ChunkEnd(chunk)) return;
        var bytes = chunkBuffer[.._d.ChunkLength(chunk)];
        var checkedChunk = ChunkVerifier.Verify(_d, chunk, bytes, run.FileName); // throws: retried from the chunk's start
        verified(run, checkedChunk);
        _verifiedUpTo = end;
    }

    public long ResumeAt(long failedAt) => _verifiedUpTo < 0 ? _d.ChunkStart(_d.ChunkOf(failedAt == _d.Size ? failedAt - 1 : failedAt)) : _verifiedUpTo;
}

/// <summary>
/// Whole blobs (no chunk hashes): bytes land in the blob's private temporary file as they arrive and
/// are released to readers at once (served unverified, counted, as the seed format is). The consumer
/// that lands the last chunk says so; the run then verifies the whole file.
/// </summary>
internal sealed class LandingConsumer(ChunkRun run, Memory<byte> buffer, FetchStatisticsCounter chunkFetched) : IRangeConsumer
{
    private readonly BlobDescriptor _d = run.Blob.Descriptor;

    /// <summary>True once this consumer landed the file's last missing chunk.</summary>
    public bool LandedLast { get; private set; }

    public Memory<byte> BufferAt(long position)
    {
        long chunkEnd = _d.ChunkEnd(_d.ChunkOf(position));
        return buffer[..(int)Math.Min(buffer.Length, chunkEnd - position)];
    }

    public void Arrived(long position, int count)
    {
        run.Blob.WriteLanded(buffer.Span[..count], position);
        long end = position + count;
        int chunk = _d.ChunkOf(position);
        if (end == _d.ChunkEnd(chunk))
        {
            chunkFetched();
            if (run.Blob.MarkLanded(chunk)) LandedLast = true;
        }
        run.Advance(end);
    }

    public long ResumeAt(long failedAt) => failedAt; // private bytes: a retry goes on where the last one stopped
}

internal delegate void FetchStatisticsCounter();
