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
internal sealed class FileReader(CachedBlob blob, ObjectLocation location, string path, ChunkFetcher fetcher, UncachedRead uncached,
    TensorLayouts layouts, CounterSet counters)
{
    private readonly ChunkFetcher _fetcher = fetcher;
    private readonly UncachedRead _uncached = uncached;
    private readonly TensorLayouts _layouts = layouts;
    private readonly CounterSet _counters = counters;
    private readonly ReadAheadWindow _window = new(fetcher.Options.MaxRequestBytes, fetcher.Options.MaxReadAheadBytes);
    private TensorReadAhead? _tensors; // once the file is known to be a model file (safetensors, GGUF)

    public CachedBlob Blob { get; } = blob;
    public ObjectLocation Location { get; } = location;
    public string Path { get; } = path;
    public long Size => Blob.Descriptor.Size;

    /// <summary>Answers a READ of up to buffer.Length bytes at offset.</summary>
    public ValueTask<ReadResult> ReadAsync(long offset, Memory<byte> buffer, CancellationToken cancel)
    {
        if (offset >= Size || buffer.Length == 0) return ValueTask.FromResult(ReadResult.InBuffer(0));
        if (Blob.Poison is not null) return ValueTask.FromResult<ReadResult>(Errno.EIO);
        int length = (int)Math.Min(buffer.Length, Size - offset);

        var (aheadOffset, aheadLength) = _window.OnRead(offset, length);
        if (!Blob.IsComplete)
        {
            if (aheadLength > 0)
            {
                // End the window on a request boundary, so read-ahead tops up in whole requests (16 MiB GETs)
                // rather than one chunk per READ as the window slides: fewer requests, less per-request cost.
                long unit = _fetcher.Options.MaxRequestBytes;
                long aheadEnd = (aheadOffset + aheadLength + unit - 1) / unit * unit;
                _fetcher.Prefetch(Blob, Location, Path, aheadOffset, aheadEnd - aheadOffset, FetchPriority.ReadAhead);
            }
            ReadAheadInLoadOrder(offset, length);
        }
        try
        {
            if (TryAnswerFromMemory(offset, length, out var fromMemory))
            {
                _counters.Increment(Counters.CacheHits);
                return ValueTask.FromResult(fromMemory);
            }
        }
        catch (IOException) { return ReadUncachedAsync(this, offset, buffer[..length], cancel); } // its write failed a moment ago
        if (Blob.IsComplete)
        {
            // Every chunk verified and on disk: the session splices the bytes from the cache file.
            _counters.Increment(Counters.CacheHits);
            return ValueTask.FromResult(ReadResult.FileRange(Blob.DataFd, offset, length));
        }
        var destination = buffer[..length];
        if (Blob.IsRangeServable(offset, length))
        {
            _counters.Increment(Counters.CacheHits);
            try { return ValueTask.FromResult(ReadResult.InBuffer(ReadCached(offset, destination.Span))); }
            catch (IOException) { return ReadUncachedAsync(this, offset, destination, cancel); } // its write failed a moment ago
        }
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
                return self.TryAnswerFromMemory(offset, destination.Length, out var fromMemory)
                    ? fromMemory
                    : ReadResult.InBuffer(self.ReadCached(offset, destination.Span));
            }
            catch (IOException) { return await ReadUncachedAsync(self, offset, destination, cancel).ConfigureAwait(false); }
        }

        // A chunk verified a moment ago whose write then failed (a full disk): read it again, uncached and verified.
        static async ValueTask<ReadResult> ReadUncachedAsync(FileReader self, long offset, Memory<byte> destination, CancellationToken cancel)
        {
            try { return ReadResult.InBuffer(await self._uncached.ReadAsync(self.Blob, self.Location, self.Path, offset, destination, cancel).ConfigureAwait(false)); }
            catch (Exception e) when (ReadErrors.IsReadFailure(e)) { return ReadErrors.ToErrno(e); }
        }
    }

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
