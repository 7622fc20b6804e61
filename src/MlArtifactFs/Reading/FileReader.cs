using System.Diagnostics;
using MlArtifactFs.Cache;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Reading;

/// <summary>
/// One open file: its blob, where its bytes come from, and its read-ahead window, bound once at open
/// (mountpoint-s3's prefetcher request). <see cref="ReadAsync"/> owns hit or miss: a hit is one pread,
/// answered synchronously; a miss waits for exactly the chunks it touches; sequential reading grows
/// the read-ahead; a full cache disk falls back to uncached, still verified, reads. Errors come back
/// as a negative errno (<see cref="ReadErrors"/>), never as wrong bytes.
/// </summary>
public sealed class FileReader
{
    private readonly ChunkFetcher _fetcher;
    private readonly FetchStatistics _stats;
    private readonly ReadAheadWindow _window;

    public FileReader(CachedBlob blob, ObjectLocation location, string path, ChunkFetcher fetcher, FetchStatistics stats)
    {
        Blob = blob;
        Location = location;
        Path = path;
        _fetcher = fetcher;
        _stats = stats;
        _window = new ReadAheadWindow(fetcher.Options.MaxRequestBytes, fetcher.Options.MaxReadAheadBytes);
    }

    public CachedBlob Blob { get; }
    public ObjectLocation Location { get; }
    public string Path { get; }
    public long Size => Blob.Descriptor.Size;

    /// <summary>Reads up to destination.Length bytes at offset; returns the count, or -errno.</summary>
    public ValueTask<int> ReadAsync(long offset, Memory<byte> destination, CancellationToken cancel)
    {
        if (offset >= Size || destination.Length == 0) return ValueTask.FromResult(0);
        int length = (int)Math.Min(destination.Length, Size - offset);
        if (Blob.Poison is not null) return ValueTask.FromResult(-Libc.EIO);

        var (aheadOffset, aheadLength) = _window.OnRead(offset, length);
        if (aheadLength > 0 && !Blob.IsComplete)
        {
            // End the window on a request boundary, so read-ahead tops up in whole requests (16 MiB GETs)
            // rather than one chunk per READ as the window slides: fewer requests, less per-request cost.
            long unit = _fetcher.Options.MaxRequestBytes;
            long aheadEnd = (aheadOffset + aheadLength + unit - 1) / unit * unit;
            _fetcher.Prefetch(Blob, Location, Path, aheadOffset, aheadEnd - aheadOffset, FetchPriority.ReadAhead);
        }

        if (Blob.IsRangeServable(offset, length))
        {
            Interlocked.Increment(ref _stats.CacheHits);
            MlfsTelemetry.CacheHits.Add(1);
            try { return ValueTask.FromResult(ReadCached(offset, destination.Span[..length])); }
            catch (IOException) { return ReadUncachedAsync(this, offset, destination[..length], cancel); } // its write failed a moment ago
        }
        Interlocked.Increment(ref _stats.CacheMisses);
        MlfsTelemetry.CacheMisses.Add(1);
        return ReadMissAsync(this, offset, destination[..length], cancel);

        static async ValueTask<int> ReadMissAsync(FileReader self, long offset, Memory<byte> destination, CancellationToken cancel)
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
            catch (Exception e) when (e is ChunksNotStoredException || e.InnerException is CacheFullException || (self._fetcher.CacheFull && ReadErrors.IsReadFailure(e)))
            {
                // Degraded, not broken: the disk cannot take more, so serve this read from storage, uncached.
                return await ReadUncachedAsync(self, offset, destination, cancel).ConfigureAwait(false);
            }
            catch (Exception e) when (ReadErrors.IsReadFailure(e))
            {
                return ReadErrors.ToErrno(e); // the fetcher logged file, range and cause
            }
            try { return self.ReadCached(offset, destination.Span); }
            catch (IOException) { return await ReadUncachedAsync(self, offset, destination, cancel).ConfigureAwait(false); }
        }

        // A chunk verified a moment ago whose write then failed (a full disk): read it again, uncached and verified.
        static async ValueTask<int> ReadUncachedAsync(FileReader self, long offset, Memory<byte> destination, CancellationToken cancel)
        {
            try { return await self._fetcher.ReadUncachedAsync(self.Blob, self.Location, self.Path, offset, destination, cancel).ConfigureAwait(false); }
            catch (Exception e) when (ReadErrors.IsReadFailure(e)) { return ReadErrors.ToErrno(e); }
        }
    }

    /// <summary>
    /// A READ of a complete file (every chunk verified and on disk): where its bytes lie, for the session
    /// to splice them to the kernel. Counted as a hit; no fetch can be needed. False otherwise.
    /// </summary>
    public bool TryGetFileRange(long offset, int size, out int fd, out int length)
    {
        fd = -1;
        length = 0;
        if (!Blob.IsComplete || Blob.Poison is not null || offset >= Size || size <= 0) return false;
        length = (int)Math.Min(size, Size - offset);
        fd = Blob.DataFd;
        Blob.LastAccess = Environment.TickCount64;
        _window.OnRead(offset, length);
        Interlocked.Increment(ref _stats.CacheHits);
        MlfsTelemetry.CacheHits.Add(1);
        return true;
    }

    private int ReadCached(long offset, Span<byte> destination)
    {
        int n = Blob.Read(offset, destination);
        if (!Blob.Descriptor.HasChunkHashes && !Blob.IsComplete)
        {
            // A file without chunk hashes can only be verified whole: until then its bytes are served unverified, and counted.
            Interlocked.Add(ref _stats.UnverifiedBytesServed, n);
            MlfsTelemetry.UnverifiedBytesServed.Add(n);
        }
        return n;
    }
}

/// <summary>The one policy that turns a failed read into an errno.</summary>
public static class ReadErrors
{
    /// <summary>
    /// Failures a read reports as EIO. Cancellation is not one of them: it propagates to the FUSE
    /// session, which answers an interrupted request itself.
    /// </summary>
    public static bool IsReadFailure(Exception e) =>
        e is IOException or ChunkVerificationException or ObjectStoreException or UnauthorizedAccessException;

    public static int ToErrno(Exception e) => -Libc.EIO;
}
