using System.Security.Cryptography;
using Microsoft.Win32.SafeHandles;
using MlArtifactFs.Fetching;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// One blob in the cache: a sparse data file plus its <see cref="ChunkRecord"/>. Tracks which
/// chunks may be served: verified chunks (per-chunk hashes), or — for seed manifests — chunks that
/// landed in this process before the whole-file check (served unverified, as the seed does, and
/// counted), until the file completes and is verified whole. Never serves a byte of a chunk that
/// failed its check. Chunks known only from the record (an earlier run, another process) are
/// "recorded" but not yet servable: the first read in this process checks their bytes against the
/// recorded digest (<see cref="TryAdoptRecorded"/>), so a cache file damaged on disk is re-fetched,
/// never served.
/// <para>Threading: readers test bits without locks (Volatile); <see cref="Sync"/> guards the
/// in-flight table; record appends are single O_APPEND writes.</para>
/// </summary>
public sealed class CachedBlob : IDisposable
{
    private readonly FileStream _dataStream, _recordStream; // own the handles below
    private readonly SafeFileHandle _data;
    private readonly SafeFileHandle _record;
    private readonly int _recordAppendFd;
    private readonly ChunkSet _servable;   // verified or checked by this process: may be served
    private readonly ChunkSet _recorded;   // in the record (this or another process), maybe unchecked
    private readonly ulong[] _digests;     // XxHash3 per chunk, from the record or as written here
    private long _recordEnd;               // guarded by Sync
    private bool _recordComplete;          // the record has the complete marker (seed blobs)
    private volatile bool _complete;
    private volatile Exception? _poison;

    /// <summary>Guards <see cref="Inflight"/> and the read position in the record (appends use O_APPEND, no lock).</summary>
    internal readonly Lock Sync = new();

    /// <summary>The run fetching each chunk right now, if any (single flight per chunk). Guarded by <see cref="Sync"/>.</summary>
    internal readonly ChunkRun?[] Inflight;

    internal CachedBlob(BlobDescriptor descriptor, string name, string dataPath, string recordPath)
    {
        Name = name;
        Descriptor = descriptor;
        DataPath = dataPath;
        RecordPath = recordPath;
        int chunks = descriptor.ChunkCount;
        _servable = new ChunkSet(chunks);
        _recorded = new ChunkSet(chunks);
        _digests = new ulong[chunks];
        Inflight = new ChunkRun?[chunks];

        _dataStream = OpenPrivate(dataPath);
        _recordStream = OpenPrivate(recordPath);
        _data = _dataStream.SafeFileHandle;
        _record = _recordStream.SafeFileHandle;
        // Appends go through O_APPEND: several processes sharing the cache append to one record,
        // and a 16-byte append is atomic, so no entry overwrites another.
        _recordAppendFd = Libc.Open(recordPath, 1 /* O_WRONLY */ | 0x400 /* O_APPEND */ | Libc.O_CLOEXEC);
        if (_recordAppendFd < 0) throw new IOException($"cannot open {recordPath} for appending: {Libc.StrError(Libc.LastErrno)}");
        // Shared lock while open: another process evicting the cache skips blobs someone has open.
        Libc.Flock((int)_data.DangerousGetHandle(), Libc.LOCK_SH);
        // Exclusive while reading (or creating) the record: a process opening the blob at the same
        // moment must not see a half-written header and reset what the first one just created.
        // A separate lock file, because .NET itself takes flock(LOCK_SH|LOCK_NB) on files it opens.
        int lockFd = Libc.Open(Path.ChangeExtension(recordPath, ".lock"), Libc.O_RDWR | 0x40 /* O_CREAT */ | Libc.O_CLOEXEC, 0x180 /* 0600 */);
        if (lockFd >= 0) Libc.Flock(lockFd, Libc.LOCK_EX);
        try { LoadRecord(); }
        finally { if (lockFd >= 0) Libc.Close(lockFd); }
    }

    /// <summary>Cache files are 0600: model weights can be private.</summary>
    private static FileStream OpenPrivate(string path) => new(path, new FileStreamOptions
    {
        Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.ReadWrite, BufferSize = 0,
        UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
    });

    public BlobDescriptor Descriptor { get; }
    /// <summary>File name stem in the cache: the sha256, plus the chunk size when chunked.</summary>
    public string Name { get; }
    public string DataPath { get; }
    public string RecordPath { get; }

    /// <summary>Every chunk present and verified (by chunk hashes or whole): eligible for passthrough.</summary>
    public bool IsComplete => _complete;

    /// <summary>Set when a seed-format blob failed its whole-file check: every read fails.</summary>
    public Exception? Poison => _poison;

    internal SafeFileHandle DataHandle => _data;
    internal int RefCount;
    internal long LastAccess = Environment.TickCount64;
    /// <summary>1 once its verified chunks were published to the chunk index.</summary>
    internal int Registered;
    /// <summary>1 once a background scrub started.</summary>
    internal int Scrubbing;

    public int ServableChunks => _servable.Count;

    private void LoadRecord()
    {
        var d = Descriptor;
        Span<byte> header = stackalloc byte[ChunkRecord.HeaderSize];
        int got = RandomAccess.Read(_record, header, 0);
        long dataLength = RandomAccess.GetLength(_data);
        if (got < ChunkRecord.HeaderSize || !ChunkRecord.HeaderMatches(header, d.ChunkSize, d.Size) || dataLength != d.Size)
        {
            // New, from another chunking, or damaged (wrong size): start over. Nothing in it is trusted.
            Reset();
        }
        else
        {
            // A torn append (crash mid-write) leaves a partial entry: cut it, or every later O_APPEND
            // entry would be misaligned and unreadable.
            long length = RandomAccess.GetLength(_record);
            long aligned = length - (length - ChunkRecord.HeaderSize) % ChunkRecord.EntrySize;
            if (aligned != length) RandomAccess.SetLength(_record, aligned);
            _recordEnd = ChunkRecord.ReadEntries(_record, ChunkRecord.HeaderSize, ApplyEntry);
        }
        if (d.ChunkCount == 0) _complete = true;
    }

    private void Reset()
    {
        RandomAccess.SetLength(_record, 0);
        RandomAccess.Write(_record, ChunkRecord.Header(Descriptor.ChunkSize, Descriptor.Size), 0);
        RandomAccess.SetLength(_data, 0);               // drop old bytes...
        RandomAccess.SetLength(_data, Descriptor.Size); // ...and keep a sparse file of the right size
        _recordEnd = ChunkRecord.HeaderSize;
    }

    private void ApplyEntry(uint chunk, ulong digest)
    {
        if (chunk == ChunkRecord.CompleteMarker)
        {
            _recordComplete = true;
            return;
        }
        if (chunk >= Descriptor.ChunkCount) return;
        _digests[chunk] = digest;
        _recorded.Add((int)chunk);
    }

    /// <summary>
    /// Seed blobs: per-chunk entries count only under a complete marker (they are written, with the
    /// marker, after the whole-file check; landed-but-unverified data never survives a restart).
    /// </summary>
    internal bool IsRecorded(int chunk) =>
        (Descriptor.HasChunkHashes || _recordComplete) && _recorded.Contains(chunk);

    /// <summary>True when every chunk is recorded, so a scrub can make the blob complete without fetching.</summary>
    public bool AllRecorded => Descriptor.ChunkCount > 0 && (Descriptor.HasChunkHashes || _recordComplete) && _recorded.Count == Descriptor.ChunkCount;

    /// <summary>
    /// Makes a recorded chunk servable after checking its bytes against the recorded digest. A
    /// mismatch means the cache file was damaged: the chunk is dropped (hole punched, no longer
    /// recorded here) and false is returned, so it gets fetched again. False too when not recorded.
    /// </summary>
    public bool TryAdoptRecorded(int chunk)
    {
        if (IsServable(chunk)) return true;
        if (!IsRecorded(chunk)) return false;
        long start = Descriptor.ChunkStart(chunk), length = Descriptor.ChunkEnd(chunk) - start;
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent((int)length);
        try
        {
            int n = Read(start, buffer.AsSpan(0, (int)length));
            if (n == length && ChunkRecord.Digest(buffer.AsSpan(0, n)) == _digests[chunk])
            {
                _servable.Add(chunk);
                if (_servable.Count == Descriptor.ChunkCount) _complete = true;
                return true;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
        _recorded.Remove(chunk);
        PunchHole(start, length);
        Interlocked.Increment(ref DamagedChunks);
        return false;
    }

    /// <summary>Chunks found damaged on disk (and dropped) in this process.</summary>
    public long DamagedChunks;

    /// <summary>Picks up chunks another process recorded since we last looked (shared cache directory).</summary>
    internal void Refresh()
    {
        lock (Sync)
            _recordEnd = ChunkRecord.ReadEntries(_record, _recordEnd, ApplyEntry);
    }

    /// <summary>May be served now: verified by this process, or recorded and checked against its digest.</summary>
    public bool IsServable(int chunk) => _servable.Contains(chunk);

    /// <summary>True when every chunk overlapping [offset, offset+length) can be served now.</summary>
    public bool IsRangeServable(long offset, long length)
    {
        if (_complete) return true;
        if (length <= 0) return true;
        int first = Descriptor.ChunkOf(offset), last = Descriptor.ChunkOf(offset + length - 1);
        for (int c = first; c <= last; c++)
            if (!IsServable(c)) return false;
        return true;
    }

    /// <summary>pread from the data file. Callers check <see cref="IsRangeServable"/> first.</summary>
    public int Read(long offset, Span<byte> destination)
    {
        LastAccess = Environment.TickCount64;
        int total = 0;
        while (total < destination.Length)
        {
            int n = RandomAccess.Read(_data, destination[total..], offset + total);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    internal void Write(ReadOnlySpan<byte> bytes, long offset) => RandomAccess.Write(_data, bytes, offset);

    /// <summary>Records a chunk whose bytes are written and whose SHA-256 matched; <paramref name="digest"/> is their XxHash3.</summary>
    internal void MarkVerified(int chunk, ulong digest)
    {
        _digests[chunk] = digest;
        _recorded.Add(chunk);
        if (!_servable.Add(chunk)) return;
        AppendEntry((uint)chunk, digest);
        if (_servable.Count == Descriptor.ChunkCount) _complete = true;
    }

    /// <summary>Seed manifests: the chunk's bytes landed (unverified). True when this was the last one.</summary>
    internal bool MarkLanded(int chunk) =>
        _servable.Add(chunk) && _servable.Count == Descriptor.ChunkCount;

    private unsafe void AppendEntry(uint chunk, ulong digest)
    {
        byte* entry = stackalloc byte[ChunkRecord.EntrySize];
        ChunkRecord.WriteEntry(new Span<byte>(entry, ChunkRecord.EntrySize), chunk, digest);
        if (Libc.Write(_recordAppendFd, entry, ChunkRecord.EntrySize) == ChunkRecord.EntrySize) return;
        int errno = Libc.LastErrno;
        // Disk full: the chunk stays servable in this process, it just will not survive a restart.
        if (errno is Libc.ENOSPC or 122 /* EDQUOT */) return;
        throw new IOException($"cannot append to {RecordPath}: {Libc.StrError(errno)}");
    }

    /// <summary>
    /// Seed manifests: hashes the whole data file against the manifest's sha256. On success the blob
    /// becomes complete (recorded); on mismatch it is poisoned and its data dropped.
    /// </summary>
    internal bool VerifyWhole()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var d = Descriptor;
        var digests = new ulong[d.ChunkCount];
        var buffer = new byte[d.ChunkSize];
        for (int c = 0; c < d.ChunkCount; c++)
        {
            int length = (int)(d.ChunkEnd(c) - d.ChunkStart(c));
            int n = Read(d.ChunkStart(c), buffer.AsSpan(0, length));
            hash.AppendData(buffer, 0, n);
            digests[c] = ChunkRecord.Digest(buffer.AsSpan(0, n));
        }
        string actual = Convert.ToHexStringLower(hash.GetHashAndReset());
        if (actual == d.Sha256)
        {
            // Per-chunk digests first, then the marker that makes them count (a crash in between leaves no marker).
            for (int c = 0; c < d.ChunkCount; c++)
            {
                _digests[c] = digests[c];
                _recorded.Add(c);
                AppendEntry((uint)c, digests[c]);
            }
            AppendEntry(ChunkRecord.CompleteMarker, 0);
            _recordComplete = true;
            _complete = true;
            return true;
        }
        _poison = new ChunkVerificationException(
            $"the file's SHA-256 is {actual}, the manifest says {d.Sha256}: dropped from the cache");
        lock (Sync) Reset();
        _servable.Clear();
        _recorded.Clear();
        return false;
    }

    /// <summary>
    /// Allocates disk blocks for a range about to be written (best effort: a full disk shows at the write).
    /// Writes into allocated blocks skip ext4's per-block delayed-allocation bookkeeping.
    /// </summary>
    internal void Preallocate(long offset, long length) =>
        Libc.Fallocate((int)_data.DangerousGetHandle(), Libc.FALLOC_FL_KEEP_SIZE, offset, length);

    /// <summary>Frees the disk blocks of a chunk that failed verification (nothing unverified stays).</summary>
    internal void PunchHole(long offset, long length) =>
        Libc.Fallocate((int)_data.DangerousGetHandle(), Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length);


    public void Dispose()
    {
        Libc.Close(_recordAppendFd);
        _dataStream.Dispose();
        _recordStream.Dispose();
    }
}

/// <summary>Bytes that do not hash to what the manifest says. Never served.</summary>
public sealed class ChunkVerificationException(string message) : Exception(message);
