using Microsoft.Win32.SafeHandles;

namespace MlArtifactFs.Cache;

/// <summary>
/// One blob of the cache as readers see it: a file of known size whose chunks become servable once
/// verified against the hashes of the manifest that opened it. Two kinds, by what that manifest lets
/// us verify: <see cref="ChunkedBlob"/> (chunk hashes: a sparse file shared by every process, and its
/// record) and <see cref="WholeBlob"/> (the seed format: landed privately, verified whole). A blob
/// knows nothing of fetching, and owns only its own state: who holds it open is the
/// <see cref="BlobCache"/>'s business, what is being fetched for it the fetcher's.
/// <para>Threading: readers test servable bits without locks; every method may be called concurrently.</para>
/// </summary>
public abstract class CachedBlob : IDisposable
{
    private readonly TaskCompletionSource _completed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _complete;
    private volatile Exception? _poison;
    private long _damagedChunks;

    protected CachedBlob(BlobDescriptor descriptor, string dataPath)
    {
        Descriptor = descriptor;
        DataPath = dataPath;
        if (descriptor.ChunkCount == 0) SetComplete();
    }

    public BlobDescriptor Descriptor { get; }
    public string Name => Descriptor.Name;

    /// <summary>The shared data file (for a whole blob still landing, where it will be once verified).</summary>
    public string DataPath { get; }

    /// <summary>The data file's descriptor (passthrough registration, spliced reads); valid while the blob is open.</summary>
    public abstract int DataFd { get; }

    /// <summary>Every chunk verified in this process and on disk (or the whole file): eligible for passthrough.</summary>
    public bool IsComplete => _complete;

    /// <summary>Set when a whole blob failed its whole-file check: every read of this blob fails.</summary>
    public Exception? Poison => _poison;

    /// <summary>Completes when the blob is complete and verified; faults when a whole-file check failed or could not run.</summary>
    public Task WholeVerified => _completed.Task;

    /// <summary>What was found unusable at open and set aside (a blob of the wrong size, an unreadable record).</summary>
    public string? SetAside { get; protected set; }

    /// <summary>Chunks found damaged on disk (and dropped from the record) by this process.</summary>
    public long DamagedChunks => Interlocked.Read(ref _damagedChunks);

    /// <summary>Told of every damaged chunk found (the cache keeps the total).</summary>
    internal Action? DamageFound { get; set; }

    /// <summary>True when every chunk is recorded (or a shared whole file awaits its check): a check can complete it without fetching.</summary>
    public abstract bool AllRecorded { get; }

    /// <summary>Chunks this process may serve now.</summary>
    public abstract int ServableChunks { get; }

    /// <summary>The file whose modification time orders eviction across restarts (null: private, never evicted).</summary>
    internal abstract string? UsePath { get; }

    /// <summary>May be served now by this process.</summary>
    public abstract bool IsServable(int chunk);

    /// <summary>A record names this chunk as verified (a hint, to be adopted after hashing); whole blobs keep no record.</summary>
    public virtual bool IsRecorded(int chunk) => false;

    /// <summary>True when every chunk overlapping [offset, offset+length) can be served now.</summary>
    public bool IsRangeServable(long offset, long length)
    {
        if (_complete || length <= 0) return true;
        var (first, last) = Descriptor.ChunksOf(offset, length);
        for (int c = first; c <= last; c++)
            if (!IsServable(c)) return false;
        return true;
    }

    /// <summary>Reads servable bytes; -1 when a chunk of the range is not servable (any more): fetch it first.</summary>
    public abstract int Read(long offset, Span<byte> destination);

    protected void SetComplete()
    {
        _complete = true;
        _completed.TrySetResult();
    }

    /// <summary>A chunk was evicted: no longer complete (new opens stop using passthrough).</summary>
    protected void ClearComplete() => _complete = false;

    protected void SetPoison(Exception error)
    {
        _poison ??= error;
        _completed.TrySetException(_poison);
    }

    protected void CountDamage()
    {
        Interlocked.Increment(ref _damagedChunks);
        DamageFound?.Invoke();
    }

    protected static int ReadFile(SafeFileHandle file, long offset, Span<byte> destination)
    {
        int total = 0;
        while (total < destination.Length)
        {
            int n = RandomAccess.Read(file, destination[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    protected static void TryDelete(string? path)
    {
        if (path is null) return;
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    public abstract void Dispose();
}

/// <summary>Another process evicted a blob while we opened it (internal: the open is retried).</summary>
internal sealed class EvictedWhileOpeningException() : IOException("the blob was evicted while it was being opened");
