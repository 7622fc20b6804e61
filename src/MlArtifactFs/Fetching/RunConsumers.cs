using MlArtifactFs.Cache;

namespace MlArtifactFs.Fetching;

/// <summary>
/// Chunked blobs: each chunk streams into a buffer of its own size and is hashed as it lands. Once it
/// verified, its readers are answered from that buffer (staged), and it is written to the shared cache
/// file and recorded; a chunk that fails its hash is never staged or written, and the retry resumes at
/// its start.
/// <para>
/// With a buffer of two chunks, the write of a verified chunk runs while the next one streams into the
/// other half (at most one write in flight; a half is reused only after its write finished and it was
/// unstaged). <see cref="DrainAsync"/> must complete before the buffer goes back to the pool. A failed
/// write fails the run (not retried): its chunk was never recorded, and stops being servable.
/// </para>
/// </summary>
internal sealed class VerifyingConsumer : IRangeConsumer, IDisposable
{
    private readonly ChunkRun _run;
    private readonly BlobDescriptor _d;
    private readonly Action<ChunkRun, VerifiedChunk> _staged, _store;
    private readonly Memory<byte>[] _halves;
    private readonly ChunkHasher _hasher;
    private int _current;             // which half receives now
    private Task _pendingWrite = Task.CompletedTask;
    private long _verifiedUpTo = -1;  // end of the last chunk verified by this consumer

    public VerifyingConsumer(ChunkRun run, Memory<byte> buffer, Action<ChunkRun, VerifiedChunk> staged, Action<ChunkRun, VerifiedChunk> store)
    {
        _run = run;
        _d = run.Blob.Descriptor;
        _staged = staged;
        _store = store;
        _hasher = ChunkVerifier.Begin(_d);
        int chunk = (int)_d.ChunkSize;
        _halves = buffer.Length >= 2L * chunk ? [buffer[..chunk], buffer.Slice(chunk, chunk)] : [buffer];
    }

    private Memory<byte> Current => _halves[_current];

    public Memory<byte> BufferAt(long position)
    {
        int chunk = _d.ChunkOf(position);
        int inChunk = (int)(position - _d.ChunkStart(chunk));
        return Current[inChunk.._d.ChunkLength(chunk)];
    }

    public async ValueTask ArrivedAsync(long position, int count)
    {
        if (_verifiedUpTo < 0) _verifiedUpTo = _d.ChunkStart(_d.ChunkOf(position));
        int chunk = _d.ChunkOf(position);
        _hasher.Append(Current.Span.Slice((int)(position - _d.ChunkStart(chunk)), count));
        long end = position + count;
        if (end != _d.ChunkEnd(chunk)) return;
        var bytes = Current[.._d.ChunkLength(chunk)];
        VerifiedChunk checkedChunk;
        using (var verify = _run.StartChild("mlfs.verify"))
        {
            verify?.SetTag("mlfs.chunk", chunk);
            verify?.SetTag("mlfs.bytes", bytes.Length);
            bool ok = _hasher.TryFinish(chunk, bytes, out checkedChunk, out string actual);
            verify?.SetTag("mlfs.verified", ok);
            if (!ok)
            {
                verify?.SetStatus(System.Diagnostics.ActivityStatusCode.Error, "SHA-256 mismatch");
                throw ChunkVerifier.Mismatch(_d, chunk, bytes.Length, actual, _run.FileName); // retried from the chunk's start; nothing was written
            }
        }
        await DrainAsync().ConfigureAwait(false); // the other half's write, before that half is reused
        _verifiedUpTo = end;
        _staged(_run, checkedChunk); // readers are answered now, from this buffer
        if (_halves.Length == 1)
        {
            Store(checkedChunk);
            return;
        }
        _pendingWrite = Task.Run(() => Store(checkedChunk));
        _current ^= 1;
    }

    private void Store(VerifiedChunk chunk)
    {
        try { _store(_run, chunk); }
        catch (IOException e) when (e is not CacheFullException)
        {
            throw new ChunkStoreException($"{_run.FileName}: chunk {chunk.Index} verified but could not be stored: {e.Message}", e);
        }
    }

    /// <summary>Waits for the write in flight, if any; rethrows its failure.</summary>
    public Task DrainAsync() => _pendingWrite;

    public long ResumeAt(long failedAt)
    {
        _hasher.Reset(); // the chunk starts again from its first byte
        return _verifiedUpTo < 0 ? _d.ChunkStart(_d.ChunkOf(failedAt == _d.Size ? failedAt - 1 : failedAt)) : _verifiedUpTo;
    }

    public void Dispose() => _hasher.Dispose();
}

/// <summary>A verified chunk that could not be written: the run fails (its readers get EIO) rather than retry past it.</summary>
internal sealed class ChunkStoreException(string message, Exception inner) : Exception(message, inner);

/// <summary>
/// Whole blobs (no chunk hashes): bytes land in the blob's private temporary file as they arrive and
/// are released to readers at once (served unverified, counted, as the seed format is). The consumer
/// that lands the last chunk says so; the run then verifies the whole file.
/// </summary>
internal sealed class LandingConsumer(ChunkRun run, Memory<byte> buffer, Action chunkFetched) : IRangeConsumer
{
    private readonly BlobDescriptor _d = run.Blob.Descriptor;

    /// <summary>True once this consumer landed the file's last missing chunk.</summary>
    public bool LandedLast { get; private set; }

    public Memory<byte> BufferAt(long position)
    {
        long chunkEnd = _d.ChunkEnd(_d.ChunkOf(position));
        return buffer[..(int)Math.Min(buffer.Length, chunkEnd - position)];
    }

    public ValueTask ArrivedAsync(long position, int count)
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
        return ValueTask.CompletedTask;
    }

    public long ResumeAt(long failedAt) => failedAt; // private bytes: a retry goes on where the last one stopped
}
