using System.Diagnostics;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Reading;

/// <summary>
/// One open file: its blob, where its bytes come from, and its read-ahead window, bound once at open
/// (mountpoint-s3's prefetcher request). <see cref="ReadAsync"/> answers a READ with one result: a
/// complete file's range for the session to splice; a hit, copied, answered synchronously; a miss,
/// after waiting for exactly the chunks it touches. Sequential reading grows the read-ahead; a disk
/// that cannot take the bytes falls back to uncached, still verified, reads. Errors come back as an
/// <see cref="Errno"/> (<see cref="ReadErrors"/>), never as wrong bytes.
/// </summary>
internal sealed class FileReader : IDisposable
{
    private readonly ChunkFetcher _fetcher;
    private readonly UncachedRead _uncached;
    private readonly TensorLayouts _layouts;
    private readonly CounterSet _counters;
    private readonly ReadAheadWindow _window;
    private readonly ReadAheadGuard _guard = new(); // keeps the window's chunks from eviction while the file is open
    private TensorReadAhead? _tensors; // once the file is known to be a model file (safetensors, GGUF)

    public FileReader(CachedBlob blob, ObjectLocation location, string path, ChunkFetcher fetcher, UncachedRead uncached,
        TensorLayouts layouts, CounterSet counters)
    {
        (Blob, Location, Path) = (blob, location, path);
        (_fetcher, _uncached, _layouts, _counters) = (fetcher, uncached, layouts, counters);
        _window = new ReadAheadWindow(fetcher.Options.MaxRequestBytes, fetcher.Options.MaxReadAheadBytes);
        (Blob as ChunkedBlob)?.AddGuard(_guard);
    }

    public CachedBlob Blob { get; }
    public ObjectLocation Location { get; }
    public string Path { get; }
    public long Size => Blob.Descriptor.Size;

    /// <summary>A read may find its chunks evicted between looking and reading (a cache smaller than the file): it fetches again, this often.</summary>
    private const int MaxEvictedRetries = 3;

    /// <summary>Answers a READ of up to buffer.Length bytes at offset.</summary>
    public ValueTask<ReadResult> ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancel)
    {
        if (offset >= Size || buffer.Length == 0) return ValueTask.FromResult(ReadResult.InBuffer(0));
        if (Blob.Poison is not null) return ValueTask.FromResult<ReadResult>(Errno.EIO);
        int length = (int)Math.Min(buffer.Length, Size - offset);
        _counters.Add(Counters.BytesRead, length);

        var (aheadOffset, aheadLength) = _window.OnRead(offset, length);
        if (!Blob.IsComplete)
        {
            long aheadEnd = offset + length;
            if (aheadLength > 0)
            {
                // End the window on a request boundary, so read-ahead tops up in whole requests (16 MiB GETs)
                // rather than one chunk per READ as the window slides: fewer requests, less per-request cost.
                long unit = _fetcher.Options.MaxRequestBytes;
                aheadEnd = Math.Min(Size, (aheadOffset + aheadLength + unit - 1) / unit * unit);
                _fetcher.Prefetch(Blob, Location, Path, aheadOffset, aheadEnd - aheadOffset, FetchPriority.ReadAhead);
            }
            _guard.Set(offset, Math.Max(aheadEnd, offset + length));
            ReadAheadInLoadOrder(offset, length);
        }
        (Blob as ChunkedBlob)?.Touch(offset, length);
        var destination = buffer[..length];
        try
        {
            if (TryAnswerFromCache(offset, destination, out var hit))
            {
                _counters.Increment(Counters.CacheHits);
                return ValueTask.FromResult(hit);
            }
        }
        catch (IOException) { return ReadUncachedAsync(this, offset, destination, cancel); } // its write failed a moment ago
        _counters.Increment(Counters.CacheMisses);
        return ReadMissAsync(this, offset, destination, cancel);

        static async ValueTask<ReadResult> ReadMissAsync(FileReader self, long offset, Memory<byte> destination, CancellationToken cancel)
        {
            // A trace of its own: runs this read starts, and their GETs, are its children (see ChunkRun.Trace).
            using var read = MlfsTelemetry.StartDetached("mlfs.read", default);
            if (read is not null)
            {
                read.SetTag("mlfs.file", self.Path);
                read.SetTag("mlfs.offset", offset);
                read.SetTag("mlfs.length", destination.Length);
                Activity.Current = read; // for this read's flow only (an async method's changes stay in it)
            }
            for (int attempt = 0; attempt < MaxEvictedRetries; attempt++)
            {
                try
                {
                    await self._fetcher.EnsureAsync(self.Blob, self.Location, self.Path, offset, destination.Length, FetchPriority.Demand, cancel)
                        .ConfigureAwait(false);
                }
                catch (FetchException e) when (e.CanReadUncached || self._fetcher.CacheFull)
                {
                    // Degraded, not broken: the disk cannot take more, so serve this read from storage, uncached.
                    return await ReadUncachedAsync(self, offset, destination, cancel).ConfigureAwait(false);
                }
                catch (Exception e) when (ReadErrors.IsReadFailure(e))
                {
                    return ReadErrors.ToErrno(e); // the fetcher logged file, range and cause
                }
                try
                {
                    if (self.TryAnswerFromCache(offset, destination, out var result)) return result;
                }
                catch (IOException) { break; }
                // Evicted between its fetch and this read (a cache much smaller than what is read at once): again.
            }
            return await ReadUncachedAsync(self, offset, destination, cancel).ConfigureAwait(false);
        }

        // A chunk verified a moment ago whose write then failed (a full disk): read it again, uncached and verified.
        static async ValueTask<ReadResult> ReadUncachedAsync(FileReader self, long offset, Memory<byte> destination, CancellationToken cancel)
        {
            try { return ReadResult.InBuffer(await self._uncached.ReadAsync(self.Blob, self.Location, self.Path, offset, destination, cancel).ConfigureAwait(false)); }
            catch (Exception e) when (ReadErrors.IsReadFailure(e)) { return ReadErrors.ToErrno(e); }
        }
    }

    /// <summary>
    /// Answers from what the cache holds, if it holds the whole range: memory a chunk was verified in (no copy),
    /// else chunks stored on disk (the session splices them from the cache file, pinned until sent), else a copy
    /// (a range over staged and stored chunks; a whole file not yet verified). False: fetch first.
    /// </summary>
    private bool TryAnswerFromCache(long offset, Memory<byte> destination, out ReadResult result)
    {
        int length = destination.Length;
        if (TryAnswerFromMemory(offset, length, out result)) return true;
        if (Blob is ChunkedBlob chunked)
        {
            if (chunked.TryLeaseStored(offset, length, out var lease))
            {
                result = ReadResult.FileRange(Blob.DataFd, offset, length, lease);
                return true;
            }
        }
        else if (Blob.IsComplete)
        {
            result = ReadResult.FileRange(Blob.DataFd, offset, length); // a whole file, verified: never evicted while open
            return true;
        }
        if (!Blob.IsRangeServable(offset, length)) return false;
        int n = ReadCached(offset, destination.Span);
        if (n < 0) return false; // evicted since it looked servable
        result = ReadResult.InBuffer(n);
        return true;
    }

    /// <summary>The file is closed: its window no longer holds chunks in the cache.</summary>
    public void Dispose() => (Blob as ChunkedBlob)?.RemoveGuard(_guard);

    /// <summary>Model files: the tensors the loader reads next, in its order (see <see cref="TensorReadAhead"/>).</summary>
    private void ReadAheadInLoadOrder(long offset, int length)
    {
        if (_tensors is null)
        {
            _layouts.Observe(Blob);
            if (_layouts.TryGet(Blob) is not { } layout) return;
            Interlocked.CompareExchange(ref _tensors, new TensorReadAhead(layout, _fetcher.Options.MaxRequestBytes, _fetcher.Options.MaxReadAheadBytes), null);
        }
        foreach (var (start, bytes) in _tensors.OnRead(offset, length))
            _fetcher.Prefetch(Blob, Location, Path, start, bytes, FetchPriority.ReadAhead);
    }

    /// <summary>
    /// Bytes still in the memory they were verified in (a chunk just fetched, or kept resident): the reply
    /// is written from there, with no copy into the READ's buffer and no read back from the cache file.
    /// </summary>
    private bool TryAnswerFromMemory(long offset, int length, out ReadResult result)
    {
        result = default;
        if (Blob is not ChunkedBlob chunked || !chunked.TryBorrow(offset, length, out nint address, out var lease)) return false;
        result = ReadResult.InMemory(address, length, lease!);
        return true;
    }

    private int ReadCached(long offset, Span<byte> destination)
    {
        int n = Blob.Read(offset, destination);
        if (n < 0) return n;
        // A file without chunk hashes can only be verified whole: until then its bytes are served unverified, and counted.
        if (!Blob.Descriptor.HasChunkHashes && !Blob.IsComplete) _counters.Add(Counters.UnverifiedBytesServed, n);
        return n;
    }
}

/// <summary>The one policy that turns a failed read into an errno (mountpoint-s3's fs/error.rs).</summary>
public static class ReadErrors
{
    /// <summary>
    /// Failures a read reports as an error. Cancellation is not one of them: it propagates to the FUSE
    /// session, which answers an interrupted request itself.
    /// </summary>
    public static bool IsReadFailure(Exception e) =>
        e is IOException or ChunkVerificationException or ObjectStoreException or UnauthorizedAccessException;

    /// <summary>
    /// Every failure of a read is EIO: storage that refused or failed, bytes that never verified, a cache
    /// file that cannot be opened or read. The log (written where the failure happened) says which.
    /// </summary>
    public static Errno ToErrno(Exception e) => Errno.EIO;
}
