using System.Buffers;
using Microsoft.Win32.SafeHandles;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// A blob without chunk hashes (the seed format): its bytes can only be verified once the file is
/// complete, and are served before that (unverified, counted by the reader). So they land in a private
/// temporary file that no other process sees; once the whole file matches its sha256 it is renamed into
/// the shared directory. A shared whole blob found at open is adopted only after this process hashed it
/// whole (<see cref="TryAdoptWhole"/>).
/// </summary>
public sealed class WholeBlob : CachedBlob
{
    private const int ScratchSize = 256 << 10;

    private SafeFileHandle _data;        // swapped once for a private file when the shared one fails its check
    private readonly ChunkSet _landed;   // chunks whose bytes are in the file (unverified until the whole check)
    private readonly Lock _lock = new();
    private string? _privatePath;        // still landing: our temporary file
    private bool _sharedCandidate;       // the shared file exists and awaits our check
    private Task<bool>? _wholeCheck;     // guarded by _lock

    private WholeBlob(BlobDescriptor descriptor, string dataPath, SafeFileHandle data) : base(descriptor, dataPath)
    {
        _data = data;
        _landed = new ChunkSet(descriptor.ChunkCount);
    }

    public override int DataFd => CacheFiles.Fd(_data);
    public override int ServableChunks => _landed.Count;
    public override bool AllRecorded => _sharedCandidate;
    internal override string? UsePath => _privatePath is null ? DataPath : null;

    /// <summary>Still landing: the bytes are private, so they may be rewritten by a retry.</summary>
    public bool IsPrivate => _privatePath is not null;

    public override bool IsServable(int chunk) => _landed.Contains(chunk);

    public override int Read(long offset, Span<byte> destination) => ReadFile(_data, offset, destination);

    /// <summary>
    /// Opens a whole blob: the shared verified file when one exists (adopted only after
    /// <see cref="TryAdoptWhole"/>), else a private temporary file in <paramref name="privateDirectory"/>.
    /// </summary>
    internal static WholeBlob Open(BlobDescriptor d, string directory, string privateDirectory)
    {
        string dataPath = Path.Combine(directory, d.Name + ".data");
        var shared = CacheFiles.OpenExisting(dataPath);
        string? setAside = null;
        if (shared is not null && RandomAccess.GetLength(shared) != d.Size)
        {
            setAside = $"a data file of {RandomAccess.GetLength(shared)} bytes, not {d.Size}";
            shared.Dispose();
            shared = null;
            File.Delete(dataPath);
        }
        if (shared is not null)
        {
            var blob = new WholeBlob(d, dataPath, shared) { _sharedCandidate = d.Size > 0 };
            Libc.Flock(blob.DataFd, Libc.LOCK_SH);
            return blob;
        }
        var (temp, data) = CreatePrivate(d, privateDirectory);
        return new WholeBlob(d, dataPath, data) { _privatePath = temp, SetAside = setAside };
    }

    private static (string Path, SafeFileHandle Data) CreatePrivate(BlobDescriptor d, string privateDirectory)
    {
        string temp = Path.Combine(privateDirectory, $"{d.Name}.{Environment.ProcessId}.{Guid.NewGuid():N}.part");
        var data = CacheFiles.Create(temp) ?? throw new IOException($"temporary cache file {temp} exists already");
        RandomAccess.SetLength(data, d.Size);
        // Held while it lands: a later process removing leftovers of dead ones skips it.
        Libc.Flock(CacheFiles.Fd(data), Libc.LOCK_SH);
        return (temp, data);
    }

    /// <summary>Writes bytes still landing into our private temporary file (nobody else reads it).</summary>
    public void WriteLanded(ReadOnlySpan<byte> bytes, long offset)
    {
        if (_privatePath is null) throw new InvalidOperationException($"{DataPath} is shared: only verified bytes may be written");
        try { RandomAccess.Write(_data, bytes, offset); }
        catch (IOException e) when (CacheFiles.IsDiskFull(e))
        {
            throw new CacheFullException($"the cache disk is full ({_privatePath})", e);
        }
    }

    /// <summary>The chunk's bytes landed (unverified). True when this was the last one.</summary>
    public bool MarkLanded(int chunk) => _landed.Add(chunk) && _landed.Count == Descriptor.ChunkCount;

    /// <summary>Ends every read of this blob with <paramref name="error"/> (whole-file verification could not run).</summary>
    public void PoisonWith(Exception error) => SetPoison(error);

    /// <summary>
    /// Checks the complete private file against the sha256 and, when it matches, renames it into the
    /// shared directory. On a mismatch the blob is poisoned and its file deleted: nothing of it ever
    /// reached another process.
    /// </summary>
    public bool CompleteWhole()
    {
        if (IsComplete) return true;
        if (!VerifyWholeFile())
        {
            SetPoison(new ChunkVerificationException($"the file's SHA-256 does not match the manifest's {Descriptor.Sha256[..16]}…: dropped, never cached"));
            _landed.Clear();
            TryDelete(_privatePath);
            _privatePath = null;
            return false;
        }
        File.Move(_privatePath!, DataPath, overwrite: true); // atomic; a verified copy there already holds the same bytes
        _privatePath = null;
        SetComplete();
        return true;
    }

    /// <summary>
    /// A shared file found at open: hashes it once (shared by concurrent callers) and adopts it when it
    /// matches. A mismatch sets it aside and switches to a private file to fetch into; false.
    /// </summary>
    public Task<bool> TryAdoptWhole(string privateDirectory)
    {
        lock (_lock)
        {
            if (IsComplete) return Task.FromResult(true);
            if (!_sharedCandidate) return Task.FromResult(false);
            return _wholeCheck ??= Task.Run(() =>
            {
                if (VerifyWholeFile())
                {
                    for (int c = 0; c < Descriptor.ChunkCount; c++) _landed.Add(c);
                    SetComplete();
                    return true;
                }
                // Damaged on disk: set it aside (only if the name still is the file we checked) and land a fresh copy privately.
                // Nothing of it was servable, so no reader sees the swap.
                CountDamage();
                if (Libc.Stat(DataPath, out var st) == 0 && Libc.FStat(DataFd, out var ours) == 0 && st.Ino == ours.Ino) TryDelete(DataPath);
                var (temp, data) = CreatePrivate(Descriptor, privateDirectory);
                var old = _data;
                _data = data;
                _privatePath = temp;
                _sharedCandidate = false;
                SetAside = "a shared whole file that does not match its sha256";
                old.Dispose();
                return false;
            });
        }
    }

    private bool VerifyWholeFile()
    {
        byte[] scratch = ArrayPool<byte>.Shared.Rent(ScratchSize);
        try { return ChunkVerifier.RegionMatches(_data, 0, Descriptor.Size, ChunkHashAlgorithm.Sha256, Descriptor.FileHash(), scratch.AsSpan(0, ScratchSize)); }
        finally { ArrayPool<byte>.Shared.Return(scratch); }
    }

    public override void Dispose()
    {
        _data.Dispose();
        TryDelete(_privatePath); // a whole blob that never verified leaves nothing behind
    }
}
