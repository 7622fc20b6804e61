using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse;

// The per-opcode adapters: parse the body, call the file system, reply. Each is a few lines; the
// table below maps opcode -> adapter (write-type opcodes all answer EROFS, unknown ones ENOSYS).
public sealed unsafe partial class FuseSession
{
    private static Handler?[] BuildDispatchTable()
    {
        var table = new Handler?[64];
        table[(int)FuseOpcode.Init] = static (s, r, in h, b) => s.OnInit(r, in h, b);
        table[(int)FuseOpcode.Destroy] = static (s, r, in h, b) => ReplyEmpty(r.Fd, h.Unique);
        table[(int)FuseOpcode.Lookup] = static (s, r, in h, b) => s.OnLookup(r, in h, b);
        table[(int)FuseOpcode.Forget] = static (s, r, in h, b) => s.OnForget(in h, b);
        table[(int)FuseOpcode.BatchForget] = static (s, r, in h, b) => s.OnBatchForget(b);
        table[(int)FuseOpcode.GetAttr] = static (s, r, in h, b) => s.OnGetAttr(r, in h);
        table[(int)FuseOpcode.Open] = static (s, r, in h, b) => s.OnOpen(r, in h, b);
        table[(int)FuseOpcode.Read] = static (s, r, in h, b) => s.OnRead(r, in h, b);
        table[(int)FuseOpcode.Release] = static (s, r, in h, b) => s.OnRelease(r, in h, b, dir: false);
        table[(int)FuseOpcode.OpenDir] = static (s, r, in h, b) => s.OnOpenDir(r, in h);
        table[(int)FuseOpcode.ReadDir] = static (s, r, in h, b) => s.OnReadDir(r, in h, b, plus: false);
        table[(int)FuseOpcode.ReadDirPlus] = static (s, r, in h, b) => s.OnReadDir(r, in h, b, plus: true);
        table[(int)FuseOpcode.ReleaseDir] = static (s, r, in h, b) => s.OnRelease(r, in h, b, dir: true);
        table[(int)FuseOpcode.StatFs] = static (s, r, in h, b) => s.OnStatFs(r, in h);
        table[(int)FuseOpcode.Flush] = static (s, r, in h, b) => ReplyEmpty(r.Fd, h.Unique);
        table[(int)FuseOpcode.FSync] = static (s, r, in h, b) => ReplyEmpty(r.Fd, h.Unique);
        table[(int)FuseOpcode.FSyncDir] = static (s, r, in h, b) => ReplyEmpty(r.Fd, h.Unique);
        table[(int)FuseOpcode.Access] = static (s, r, in h, b) => OnAccess(r, in h, b);
        table[(int)FuseOpcode.Interrupt] = static (s, r, in h, b) => s.OnInterrupt(b);
        // No extended attributes: ENOSYS makes the kernel stop asking (it caches the answer).
        table[(int)FuseOpcode.GetXattr] = static (s, r, in h, b) => ReplyError(r.Fd, h.Unique, Libc.ENOSYS);
        table[(int)FuseOpcode.ListXattr] = static (s, r, in h, b) => ReplyError(r.Fd, h.Unique, Libc.ENOSYS);
        table[(int)FuseOpcode.Statx] = static (s, r, in h, b) => ReplyError(r.Fd, h.Unique, Libc.ENOSYS);
        foreach (var op in (ReadOnlySpan<FuseOpcode>)[
                     FuseOpcode.SetAttr, FuseOpcode.Symlink, FuseOpcode.MkNod, FuseOpcode.MkDir, FuseOpcode.Unlink,
                     FuseOpcode.RmDir, FuseOpcode.Rename, FuseOpcode.Rename2, FuseOpcode.Link, FuseOpcode.Write,
                     FuseOpcode.SetXattr, FuseOpcode.RemoveXattr, FuseOpcode.Create, FuseOpcode.FAllocate,
                     FuseOpcode.CopyFileRange, FuseOpcode.CopyFileRange64, FuseOpcode.TmpFile])
            table[(int)op] = static (s, r, in h, b) => ReplyError(r.Fd, h.Unique, Libc.EROFS);
        return table;
    }

    /// <summary>
    /// INIT, parsed by the minor the kernel states: before 7.36 (Linux &lt; 5.17) it sends 16 bytes
    /// (no flags2), from 7.36 on 64. We offer only what it offers, and passthrough only from 7.40.
    /// </summary>
    private void OnInit(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        if (!TryParseInit(body, out FuseInitIn init))
        {
            _logger.LogError("FUSE INIT of {Length} bytes cannot be parsed", body.Length);
            ReplyError(r.Fd, h.Unique, Libc.EINVAL);
            _initialized.TrySetException(new FuseMountException($"the kernel sent an INIT of {body.Length} bytes that cannot be parsed"));
            return;
        }
        if (init.Major != FuseConstants.KernelMajor || init.Minor < FuseConstants.MinSupportedMinor)
        {
            // A newer major: answer with ours and the kernel re-sends INIT in our dialect.
            if (init.Major > FuseConstants.KernelMajor)
            {
                Reply(r.Fd, h.Unique, new FuseInitOut { Major = FuseConstants.KernelMajor, Minor = FuseConstants.KernelMinor });
                return;
            }
            _logger.LogError("kernel FUSE protocol {Major}.{Minor} is too old (need 7.{Min}+)", init.Major, init.Minor, FuseConstants.MinSupportedMinor);
            ReplyError(r.Fd, h.Unique, Libc.EPROTO);
            _initialized.TrySetException(new FuseMountException($"kernel FUSE protocol {init.Major}.{init.Minor} is too old"));
            return;
        }

        // flags2 exists from 7.36, and only counts when the kernel sets FUSE_INIT_EXT.
        bool extended = init.Minor >= 36 && (init.Flags & (uint)FuseInitFlags.InitExt) != 0;
        ulong offered = init.Flags | (extended ? (ulong)init.Flags2 << 32 : 0);
        var wanted = FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.MaxPages
                     | FuseInitFlags.ParallelDirops | FuseInitFlags.DoReaddirplus | FuseInitFlags.ReaddirplusAuto
                     | FuseInitFlags.AsyncDio | FuseInitFlags.InitExt | FuseInitFlags.CacheSymlinks;
        // Passthrough lets the kernel read complete cache files directly; it needs CAP_SYS_ADMIN to register files.
        if (_options.EnablePassthrough && FuseMounter.IsRoot && init.Minor >= 40) wanted |= FuseInitFlags.Passthrough;
        ulong agreed = offered & (ulong)wanted;
        _passthrough = (agreed & (ulong)FuseInitFlags.Passthrough) != 0;
        if (_options.EnablePassthrough && !_passthrough)
            _logger.LogInformation("FUSE passthrough is not available (protocol 7.{Minor}{Why}): warm reads are served by mlfs itself",
                init.Minor, init.Minor < 40 ? ", needs 7.40 / Linux 6.9" : FuseMounter.IsRoot ? ", not offered by the kernel" : ", needs CAP_SYS_ADMIN");
        _protocolMinor = Math.Min(init.Minor, FuseConstants.KernelMinor);

        var reply = new FuseInitOut
        {
            Major = FuseConstants.KernelMajor,
            Minor = FuseConstants.KernelMinor,
            MaxReadahead = init.MaxReadahead,
            Flags = (uint)agreed,
            Flags2 = extended ? (uint)(agreed >> 32) : 0, // unused before 7.36
            MaxBackground = 64,          // READs the kernel may have in flight for async read-ahead
            CongestionThreshold = 48,
            MaxWrite = (uint)_options.MaxRead,
            TimeGran = 1,
            MaxPages = (ushort)(_options.MaxRead / 4096),
            MaxStackDepth = _passthrough ? 1u : 0u, // passthrough stacks on the cache's file system
        };
        Reply(r.Fd, h.Unique, in reply);
        var info = new FuseConnectionInfo(_protocolMinor, (uint)_options.MaxRead, _passthrough);
        _logger.LogDebug("FUSE INIT: protocol 7.{Minor}, flags {Flags:x}, passthrough {Passthrough}", _protocolMinor, agreed, _passthrough);
        _fs.Initialized(this, info);
        _initialized.TrySetResult();
    }

    internal static bool TryParseInit(ReadOnlySpan<byte> body, out FuseInitIn init)
    {
        init = default;
        if (body.Length < FuseInitIn.CompatSize) return false;
        var compat = new RequestReader(body);
        compat.TryRead(out uint major);
        compat.TryRead(out uint minor);
        if (major == FuseConstants.KernelMajor && minor >= 36 && body.Length >= Unsafe.SizeOf<FuseInitIn>())
            return new RequestReader(body).TryRead(out init);
        compat.TryRead(out uint maxReadahead);
        compat.TryRead(out uint flags);
        init.Major = major;
        init.Minor = minor;
        init.MaxReadahead = maxReadahead;
        init.Flags = flags;
        return true;
    }

    private void FillTimeouts(ref FuseEntryOut entry)
    {
        entry.EntryValid = _entryValidSec;
        entry.AttrValid = _entryValidSec;
    }

    private void OnLookup(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        var reader = new RequestReader(body);
        if (!reader.TryReadName(out var name))
        {
            ReplyError(r.Fd, h.Unique, Libc.EINVAL);
            return;
        }
        var errno = _fs.Lookup(h.NodeId, name, out var entry);
        if (errno == Errno.ENOENT)
        {
            // A negative entry: the kernel remembers the miss (the tree is immutable; a switch invalidates it).
            var negative = new FuseEntryOut { NodeId = 0, EntryValid = _entryValidSec };
            Reply(r.Fd, h.Unique, in negative);
            return;
        }
        if (!errno.IsOk)
        {
            ReplyError(r.Fd, h.Unique, errno.Value);
            return;
        }
        FillTimeouts(ref entry);
        Reply(r.Fd, h.Unique, in entry);
    }

    private void OnForget(in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        // Never reply to FORGET.
        var reader = new RequestReader(body);
        if (reader.TryRead(out FuseForgetIn forget)) _fs.Forget(h.NodeId, forget.NLookup);
    }

    private void OnBatchForget(ReadOnlySpan<byte> body)
    {
        var reader = new RequestReader(body);
        if (!reader.TryRead(out FuseBatchForgetIn batch)) return;
        for (uint i = 0; i < batch.Count && reader.TryRead(out FuseForgetOne one); i++)
            _fs.Forget(one.NodeId, one.NLookup);
    }

    private void OnGetAttr(ReaderContext r, in FuseInHeader h)
    {
        var errno = _fs.GetAttr(h.NodeId, out var attr);
        if (!errno.IsOk)
        {
            ReplyError(r.Fd, h.Unique, errno.Value);
            return;
        }
        var reply = new FuseAttrOut { AttrValid = _entryValidSec, Attr = attr };
        Reply(r.Fd, h.Unique, in reply);
    }

    private const int O_ACCMODE = 3, O_TRUNC = 0x200;

    private void OnOpen(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        var reader = new RequestReader(body);
        if (!reader.TryRead(out FuseOpenIn open))
        {
            ReplyError(r.Fd, h.Unique, Libc.EINVAL);
            return;
        }
        if ((open.Flags & O_ACCMODE) != Libc.O_RDONLY || (open.Flags & O_TRUNC) != 0)
        {
            ReplyError(r.Fd, h.Unique, Libc.EROFS);
            return;
        }
        var errno = _fs.Open(h.NodeId, (int)open.Flags, out var result);
        if (!errno.IsOk)
        {
            ReplyError(r.Fd, h.Unique, errno.Value);
            return;
        }
        // The kernel accepts only PASSTHROUGH|DIRECT_IO|PARALLEL_DIRECT_WRITES|NOFLUSH with passthrough
        // (FOPEN_PASSTHROUGH_MASK); KEEP_CACHE there fails the open with EIO.
        var flags = result.BackingId > 0 ? FuseOpenFlags.Passthrough
            : result.KeepCache ? FuseOpenFlags.KeepCache : FuseOpenFlags.None;
        if (result.DirectIo && result.BackingId <= 0) flags = FuseOpenFlags.DirectIo;
        var reply = new FuseOpenOut { Fh = result.Handle, OpenFlags = (uint)flags, BackingId = result.BackingId };
        Reply(r.Fd, h.Unique, in reply);
    }

    private void OnRead(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        var reader = new RequestReader(body);
        if (!reader.TryRead(out FuseReadIn read))
        {
            ReplyError(r.Fd, h.Unique, Libc.EINVAL);
            return;
        }
        int size = (int)Math.Min(read.Size, (uint)_options.MaxRead);
        byte[] buffer = _readBuffers.Rent();
        if (!_tokenPool.TryTake(out var cts)) cts = new CancellationTokenSource();
        ValueTask<ReadResult> pending;
        try
        {
            pending = _fs.ReadAsync(h.NodeId, read.Fh, (long)read.Offset, buffer.AsMemory(sizeof(FuseOutHeader), size), cts.Token);
        }
        catch
        {
            _readBuffers.Return(buffer);
            _tokenPool.Add(cts);
            throw;
        }
        if (pending.IsCompleted)
        {
            // Cache hit: answered on this thread, nothing allocated.
            ReadResult result;
            try { result = pending.Result; }
            catch (Exception e) { result = ErrnoOf(e); }
            CompleteRead(r.Fd, h.Unique, buffer, result, cts);
            return;
        }
        ulong unique = h.Unique;
        var entry = new PendingReadToken(cts);
        _pendingReads[unique] = entry;
        if (Volatile.Read(ref _disposed) != 0) entry.Cancel();
        _ = PendingRead.CompleteAsync(this, r.Fd, unique, buffer, pending, entry);
    }

    /// <summary>READs answered by splicing from a file (see <see cref="ReadResult.FileRange"/>).</summary>
    public long SplicedReads => _splicer.Spliced;

    internal Errno ErrnoOf(Exception e)
    {
        // Interrupted by the reader: EINTR (the kernel's convention). Cancelled by unmount: EIO,
        // or the reader's libc would retry the read forever against a dying mount.
        if (e is OperationCanceledException) return Volatile.Read(ref _disposed) != 0 ? Errno.EIO : Errno.EINTR;
        RecordFailure(FuseOpcode.Read, e);
        return Errno.EIO;
    }

    /// <summary>
    /// Answers a READ with its result: an error, bytes in <paramref name="buffer"/>, or a file range
    /// (spliced; by copy through <paramref name="buffer"/> when the splice cannot be done).
    /// </summary>
    internal void CompleteRead(int fd, ulong unique, byte[] buffer, ReadResult result, CancellationTokenSource cts)
    {
        int header = sizeof(FuseOutHeader);
        if (result.IsFileRange)
        {
            var lease = result.Lease;
            try
            {
                if (!_splicer.TrySend(fd, unique, result.Fd, result.FileOffset, result.Length))
                    result = ReadFileRange(buffer, header, result);
            }
            finally { lease?.Return(); } // the bytes left the file (or the copy failed): it may change now
        }
        if (!result.Error.IsOk) ReplyError(fd, unique, result.Error.Value);
        else if (result.IsMemory)
        {
            // Straight from the file system's memory: the kernel copies it once into the reader's pages.
            try
            {
                var reply = new FuseOutHeader { Len = (uint)(header + result.Length), Unique = unique };
                WriteReply(fd, &reply, (byte*)result.Address, result.Length);
            }
            finally { result.Lease!.Return(); }
        }
        else if (!result.IsFileRange)
        {
            var reply = new FuseOutHeader { Len = (uint)(header + result.Length), Unique = unique };
            fixed (byte* p = buffer) WriteReply(fd, &reply, p + header, result.Length);
        }
        _readBuffers.Return(buffer);
        if (cts.TryReset()) _tokenPool.Add(cts);
        else cts.Dispose();
    }

    /// <summary>The copy path for a file range: pread it into the READ's buffer.</summary>
    private ReadResult ReadFileRange(byte[] buffer, int header, ReadResult range)
    {
        int got = 0;
        fixed (byte* p = buffer)
        {
            while (got < range.Length)
            {
                nint n = Libc.PRead(range.Fd, p + header + got, range.Length - got, range.FileOffset + got);
                if (n < 0 && Libc.LastErrno == Libc.EINTR) continue;
                if (n < 0) return ErrnoOf(new IOException($"pread of a cached file failed: {Libc.StrError(Libc.LastErrno)}"));
                if (n == 0) break;
                got += (int)n;
            }
        }
        return ReadResult.InBuffer(got);
    }

    /// <summary>A slow READ finished: after this no INTERRUPT can reach its token, which may then go back to the pool.</summary>
    internal void ForgetPendingRead(ulong unique, PendingReadToken entry)
    {
        _pendingReads.TryRemove(new KeyValuePair<ulong, PendingReadToken>(unique, entry));
        entry.Finish();
    }

    private void OnRelease(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body, bool dir)
    {
        var reader = new RequestReader(body);
        if (reader.TryRead(out FuseReleaseIn release))
        {
            if (dir) _fs.ReleaseDir(h.NodeId, release.Fh);
            else _fs.Release(h.NodeId, release.Fh);
        }
        ReplyEmpty(r.Fd, h.Unique);
    }

    private void OnOpenDir(ReaderContext r, in FuseInHeader h)
    {
        var errno = _fs.OpenDir(h.NodeId, out ulong handle);
        if (!errno.IsOk)
        {
            ReplyError(r.Fd, h.Unique, errno.Value);
            return;
        }
        // Immutable directories: let the kernel cache their listing too.
        var reply = new FuseOpenOut { Fh = handle, OpenFlags = (uint)(FuseOpenFlags.KeepCache | FuseOpenFlags.CacheDir) };
        Reply(r.Fd, h.Unique, in reply);
    }

    private void OnReadDir(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body, bool plus)
    {
        var reader = new RequestReader(body);
        if (!reader.TryRead(out FuseReadIn read))
        {
            ReplyError(r.Fd, h.Unique, Libc.EINVAL);
            return;
        }
        int size = (int)Math.Min(read.Size, (uint)(r.ReplyBuffer.Length - sizeof(FuseOutHeader)));
        var listing = new DirectoryListing(r.ReplyBuffer.AsSpan(0, size), plus);
        var errno = _fs.ReadDir(h.NodeId, read.Fh, (long)read.Offset, ref listing);
        if (!errno.IsOk) ReplyError(r.Fd, h.Unique, errno.Value);
        else ReplyBytes(r.Fd, h.Unique, r.ReplyBuffer.AsSpan(0, listing.Length));
    }

    private void OnStatFs(ReaderContext r, in FuseInHeader h)
    {
        var errno = _fs.StatFs(h.NodeId, out var stat);
        if (!errno.IsOk) ReplyError(r.Fd, h.Unique, errno.Value);
        else Reply(r.Fd, h.Unique, in stat);
    }

    private const int W_OK = 2;

    private static void OnAccess(ReaderContext r, in FuseInHeader h, ReadOnlySpan<byte> body)
    {
        var reader = new RequestReader(body);
        reader.TryRead(out FuseAccessIn access);
        ReplyError(r.Fd, h.Unique, (access.Mask & W_OK) != 0 ? Libc.EROFS : 0);
    }

    private void OnInterrupt(ReadOnlySpan<byte> body)
    {
        // Never reply to INTERRUPT; cancel the READ it names if it is still pending.
        var reader = new RequestReader(body);
        if (reader.TryRead(out FuseInterruptIn interrupt) && _pendingReads.TryGetValue(interrupt.Unique, out var entry))
            entry.Cancel(); // a no-op once the READ finished, so a late INTERRUPT never reaches a token reused by another READ
    }
}

/// <summary>The slow path of READ, outside the unsafe class (no await in unsafe code).</summary>
internal static class PendingRead
{
    public static async Task CompleteAsync(FuseSession session, int fd, ulong unique, byte[] buffer,
        ValueTask<ReadResult> pending, PendingReadToken entry)
    {
        ReadResult result;
        try { result = await pending.ConfigureAwait(false); }
        catch (Exception e) { result = session.ErrnoOf(e); }
        session.ForgetPendingRead(unique, entry);
        session.CompleteRead(fd, unique, buffer, result, entry.Source);
    }
}

/// <summary>
/// The cancellation of one pending READ. INTERRUPT and completion meet under its lock: once the READ
/// has finished, <see cref="Cancel"/> does nothing, so its pooled token can safely serve another READ.
/// </summary>
internal sealed class PendingReadToken(CancellationTokenSource source)
{
    private readonly Lock _lock = new();
    private bool _finished; // guarded by _lock

    public CancellationTokenSource Source { get; } = source;

    public void Cancel()
    {
        lock (_lock)
        {
            if (_finished) return;
            try { Source.Cancel(); } catch (ObjectDisposedException) { }
        }
    }

    public void Finish()
    {
        lock (_lock) _finished = true;
    }
}
