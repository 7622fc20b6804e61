using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse;

/// <summary>
/// One mounted FUSE connection: reader threads, a dispatch table, replies and notifications.
/// <para>
/// Threading: <see cref="FuseMountOptions.ReaderThreads"/> threads each read requests from their own
/// cloned /dev/fuse fd (the kernel spreads requests across them) and answer synchronous operations
/// in place. A READ that misses the cache completes later on whatever thread finishes the fetch,
/// and its reply goes to the fd the request came from (the kernel requires it). No reader thread
/// ever waits on the network. INTERRUPT cancels the pending READ's token.
/// </para>
/// <para>
/// Allocation: request and reply buffers are pinned and reused; a READ that hits the cache
/// allocates nothing (its CancellationTokenSource comes from a pool and is only registered for
/// INTERRUPT when the read goes asynchronous).
/// </para>
/// </summary>
public sealed unsafe partial class FuseSession : IDisposable
{
    private delegate void Handler(FuseSession session, ReaderContext reader, in FuseInHeader header, ReadOnlySpan<byte> body);

    private readonly IFuseFileSystem _fs;
    private readonly FuseMountOptions _options;
    private readonly ILogger _logger;
    private readonly string _mountPoint;
    private readonly List<int> _fds = [];
    private readonly List<Thread> _threads = [];
    private readonly TaskCompletionSource _initialized = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<ulong, PendingReadToken> _pendingReads = new();
    private readonly BufferPool _readBuffers;
    private readonly ReplySplicer _splicer;
    private readonly ConcurrentBag<CancellationTokenSource> _tokenPool = [];
    private readonly long[] _opCounts = new long[64];
    private readonly long[] _opFailures = new long[64];
    private long _unknownOps;
    private int _masterFd;
    private int _runningReaders;
    private int _disposed;
    private uint _protocolMinor;
    private bool _passthrough;
    private ulong _deviceId;
    private readonly ulong _entryValidSec;

    private static readonly Handler?[] Handlers = BuildDispatchTable();

    private FuseSession(IFuseFileSystem fs, FuseMountOptions options, ILogger logger)
    {
        _fs = fs;
        _options = options;
        _logger = logger;
        _mountPoint = Path.GetFullPath(options.MountPoint);
        _readBuffers = new BufferPool(Unsafe.SizeOf<FuseOutHeader>() + options.MaxRead);
        _splicer = new ReplySplicer(logger);
        _entryValidSec = (ulong)options.EntryTimeout.TotalSeconds;
    }

    public string MountPoint => _mountPoint;

    /// <summary>True when INIT agreed on passthrough; <see cref="TryRegisterBackingFile"/> may still be refused.</summary>
    public bool PassthroughEnabled => _passthrough;

    /// <summary>Completes when the connection ends: unmounted from outside, aborted, or disposed.</summary>
    public Task Completion => _completion.Task;

    /// <summary>The mount's device number (st_dev); its minor names the bdi and the fusectl entry.</summary>
    public ulong DeviceId => _deviceId;

    /// <summary>
    /// Mounts <paramref name="fs"/> and returns once the kernel has finished INIT and the mount point
    /// answers. Throws <see cref="FuseMountException"/> with an actionable message on failure.
    /// </summary>
    public static FuseSession Mount(IFuseFileSystem fs, FuseMountOptions options, ILogger? logger = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxRead, 4096);
        var session = new FuseSession(fs, options, logger ?? NullLogger.Instance);
        session._masterFd = FuseMounter.Mount(options);
        session._fds.Add(session._masterFd);
        try
        {
            session.StartReaders();
            if (!session._initialized.Task.Wait(TimeSpan.FromSeconds(30)))
                throw new FuseMountException($"the kernel did not send INIT for {options.MountPoint} within 30 s");
            if (session._initialized.Task.IsFaulted) throw session._initialized.Task.Exception!.InnerException!;
            if (Libc.Stat(session._mountPoint, out var st) != 0)
                throw new FuseMountException($"the new mount at {options.MountPoint} does not answer: {Libc.StrError(Libc.LastErrno)}");
            session._deviceId = st.Dev;
            session.SetReadAhead();
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>A session with no mount, for benchmarks of parse and dispatch: replies go to <paramref name="replyFd"/>.</summary>
    internal static FuseSession CreateDetached(IFuseFileSystem fs, FuseMountOptions options) =>
        new(fs, options, NullLogger.Instance);

    /// <summary>Dispatches one raw request as a reader thread would, answering on <paramref name="replyFd"/>.</summary>
    internal void DispatchDetached(int replyFd, ReadOnlySpan<byte> request)
    {
        _detachedReader ??= new ReaderContext(replyFd, GC.AllocateArray<byte>(RequestBufferSize, pinned: true));
        Dispatch(_detachedReader, request);
    }

    private ReaderContext? _detachedReader;

    private void StartReaders()
    {
        for (int i = 0; i < _options.ReaderThreads; i++)
        {
            int fd = _masterFd;
            if (i > 0)
            {
                fd = Libc.Open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC);
                uint master = (uint)_masterFd;
                if (fd < 0 || Libc.Ioctl(fd, FuseConstants.DevIocClone, &master) != 0)
                {
                    _logger.LogDebug("cloning /dev/fuse failed ({Error}); using {Count} reader thread(s)", Libc.StrError(Libc.LastErrno), i);
                    if (fd >= 0) Libc.Close(fd);
                    break;
                }
                _fds.Add(fd);
            }
            var thread = new Thread(ReaderLoop) { IsBackground = true, Name = $"fuse-reader-{i}" };
            Interlocked.Increment(ref _runningReaders);
            _threads.Add(thread);
            thread.Start(fd);
        }
    }

    private void SetReadAhead()
    {
        if (_options.ReadAheadKb <= 0) return;
        string path = $"/sys/class/bdi/{FuseMounter.DeviceMajor(_deviceId)}:{FuseMounter.DeviceMinor(_deviceId)}/read_ahead_kb";
        try { File.WriteAllText(path, _options.ReadAheadKb.ToString(System.Globalization.CultureInfo.InvariantCulture)); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // In a container /sys is read-only (a bind of /sys/class/bdi stays read-only too): streams then run
            // with 128 KiB READs. The bdi is the host's as well, so anything with a writable /sys can raise it.
            _logger.LogWarning("could not raise the mount's read-ahead ({Path}: {Error}); the kernel will send 128 KiB READs " +
                               "(measured: warm reads through the daemon ~0.7x). Raise it from the host: echo {Kb} > {Path}", path, e.Message, _options.ReadAheadKb, path);
        }
    }

    /// <summary>The buffer for reading /dev/fuse must hold the largest request (max_write + headers) or read() fails with EINVAL.</summary>
    private int RequestBufferSize => Math.Max(8192, _options.MaxRead + 4096);

    private sealed class ReaderContext(int fd, byte[] replyBuffer)
    {
        public readonly int Fd = fd;
        /// <summary>Pinned; used for synchronous replies only (never escapes the reader thread).</summary>
        public readonly byte[] ReplyBuffer = replyBuffer;
    }

    private void ReaderLoop(object? state)
    {
        int fd = (int)state!;
        byte[] request = GC.AllocateArray<byte>(RequestBufferSize, pinned: true);
        var reader = new ReaderContext(fd, GC.AllocateArray<byte>(RequestBufferSize, pinned: true));
        try
        {
            fixed (byte* p = request)
            {
                while (true)
                {
                    nint n = Libc.Read(fd, p, request.Length);
                    if (n < 0)
                    {
                        int errno = Libc.LastErrno;
                        if (errno is Libc.EINTR or Libc.EAGAIN or Libc.ENOENT) continue; // ENOENT: request interrupted before we read it
                        if (errno != 19 /* ENODEV: unmounted */ && errno != Libc.EBADF && Volatile.Read(ref _disposed) == 0)
                            _logger.LogError("reading /dev/fuse failed: {Error}", Libc.StrError(errno));
                        break;
                    }
                    Dispatch(reader, new ReadOnlySpan<byte>(p, (int)n));
                }
            }
        }
        finally
        {
            if (Interlocked.Decrement(ref _runningReaders) == 0)
            {
                _initialized.TrySetException(new FuseMountException($"the FUSE connection for {_mountPoint} closed before INIT"));
                CancelPendingReads();
                _completion.TrySetResult();
            }
        }
    }

    private void Dispatch(ReaderContext reader, ReadOnlySpan<byte> request)
    {
        // Input from the kernel is checked, never trusted to be well formed: a short header is dropped,
        // a length that disagrees with what was read is answered EINVAL (or dropped where no reply is due).
        if (!MemoryMarshal.TryRead(request, out FuseInHeader header) || header.Len < Unsafe.SizeOf<FuseInHeader>())
        {
            _logger.LogWarning("short FUSE request ({Length} bytes) ignored", request.Length);
            return;
        }
        if (header.Len != request.Length)
        {
            _logger.LogWarning("FUSE request of {Length} bytes says it has {Len}: refused", request.Length, header.Len);
            if (header.Opcode is not (FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt)) ReplyError(reader.Fd, header.Unique, Libc.EINVAL);
            return;
        }
        var body = request[Unsafe.SizeOf<FuseInHeader>()..(int)header.Len];
        uint op = (uint)header.Opcode;
        var handler = op < Handlers.Length ? Handlers[op] : null;
        if (op < _opCounts.Length) Interlocked.Increment(ref _opCounts[op]);
        if (handler is null)
        {
            Interlocked.Increment(ref _unknownOps);
            ReplyError(reader.Fd, header.Unique, Libc.ENOSYS);
            return;
        }
        try
        {
            handler(this, reader, in header, body);
        }
        catch (Exception e)
        {
            RecordFailure(header.Opcode, e);
            ReplyError(reader.Fd, header.Unique, Libc.EIO);
        }
    }

    private void RecordFailure(FuseOpcode opcode, Exception e)
    {
        uint op = (uint)opcode;
        long failures = op < _opFailures.Length ? Interlocked.Increment(ref _opFailures[op]) : 1;
        if (failures == 1 || failures % 1000 == 0)
            _logger.LogError(e, "FUSE {Op} failed ({Failures} so far): answered EIO", opcode, failures);
    }

    /// <summary>Requests served per opcode since mount (index = opcode).</summary>
    public long GetOpCount(FuseOpcode op) => Interlocked.Read(ref _opCounts[(uint)op]);

    public long UnknownOps => Interlocked.Read(ref _unknownOps);

    /// <summary>READs answered asynchronously that have no reply yet (waiting on the network).</summary>
    public int PendingReads => _pendingReads.Count;

    // ---- replies ----------------------------------------------------------------------------

    internal static void ReplyError(int fd, ulong unique, int errno)
    {
        var header = new FuseOutHeader { Len = (uint)sizeof(FuseOutHeader), Error = -errno, Unique = unique };
        WriteReply(fd, &header, null, 0);
    }

    internal static void ReplyEmpty(int fd, ulong unique) => ReplyError(fd, unique, 0);

    internal static void Reply<T>(int fd, ulong unique, in T payload) where T : unmanaged
    {
        fixed (T* p = &payload)
            ReplyBytes(fd, unique, new ReadOnlySpan<byte>(p, sizeof(T)));
    }

    internal static void ReplyBytes(int fd, ulong unique, ReadOnlySpan<byte> payload)
    {
        var header = new FuseOutHeader { Len = (uint)(sizeof(FuseOutHeader) + payload.Length), Unique = unique };
        fixed (byte* p = payload)
            WriteReply(fd, &header, p, payload.Length);
    }

    /// <summary>One writev per reply: header and payload, no copy. ENOENT means the request was interrupted: fine.</summary>
    private static void WriteReply(int fd, FuseOutHeader* header, byte* payload, int length)
    {
        IoVec* iov = stackalloc IoVec[2];
        iov[0] = new IoVec { Base = header, Length = (nuint)sizeof(FuseOutHeader) };
        iov[1] = new IoVec { Base = payload, Length = (nuint)length };
        nint n;
        do n = Libc.Writev(fd, iov, length > 0 ? 2 : 1); while (n < 0 && Libc.LastErrno == Libc.EINTR);
    }

    // ---- notifications (used for version switch) ---------------------------------------------

    /// <summary>Drops the kernel's cached entry <paramref name="name"/> under <paramref name="parent"/>. Returns 0 or errno (ENOENT: not cached).</summary>
    public int NotifyInvalidateEntry(ulong parent, ReadOnlySpan<byte> name)
    {
        int len = sizeof(FuseOutHeader) + sizeof(FuseNotifyInvalEntryOut) + name.Length + 1;
        byte[] buffer = new byte[len];
        var header = new FuseOutHeader { Len = (uint)len, Error = FuseConstants.NotifyInvalEntry, Unique = 0 };
        var body = new FuseNotifyInvalEntryOut { Parent = parent, NameLen = (uint)name.Length };
        MemoryMarshal.Write(buffer, in header);
        MemoryMarshal.Write(buffer.AsSpan(sizeof(FuseOutHeader)), in body);
        name.CopyTo(buffer.AsSpan(sizeof(FuseOutHeader) + sizeof(FuseNotifyInvalEntryOut)));
        return WriteNotification(buffer);
    }

    /// <summary>Drops cached attributes (and page cache in [offset, offset+length), length 0 = all) of a node.</summary>
    public int NotifyInvalidateInode(ulong node, long offset = 0, long length = 0)
    {
        byte[] buffer = new byte[sizeof(FuseOutHeader) + sizeof(FuseNotifyInvalInodeOut)];
        var header = new FuseOutHeader { Len = (uint)buffer.Length, Error = FuseConstants.NotifyInvalInode, Unique = 0 };
        var body = new FuseNotifyInvalInodeOut { Ino = node, Off = offset, Len = length };
        MemoryMarshal.Write(buffer, in header);
        MemoryMarshal.Write(buffer.AsSpan(sizeof(FuseOutHeader)), in body);
        return WriteNotification(buffer);
    }

    private int WriteNotification(byte[] buffer)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.Write(_masterFd, p, buffer.Length);
            return n < 0 ? Libc.LastErrno : 0;
        }
    }

    // ---- passthrough ----------------------------------------------------------------------------

    /// <summary>
    /// Registers an open, read-only fd as a passthrough backing file; returns its backing id (&gt; 0),
    /// or 0 when passthrough is unavailable or refused (the caller then serves reads itself).
    /// The fd may be closed after registration; the kernel holds its own reference.
    /// </summary>
    public int TryRegisterBackingFile(int fd)
    {
        if (!_passthrough) return 0;
        var map = new FuseBackingMap { Fd = fd };
        int id = Libc.Ioctl(_masterFd, FuseConstants.DevIocBackingOpen, &map);
        if (id <= 0)
        {
            _logger.LogDebug("passthrough refused: {Error}", Libc.StrError(Libc.LastErrno));
            return 0;
        }
        return id;
    }

    public void ReleaseBackingFile(int backingId)
    {
        if (backingId <= 0) return;
        uint id = (uint)backingId;
        Libc.Ioctl(_masterFd, FuseConstants.DevIocBackingClose, &id);
    }

    // ---- shutdown --------------------------------------------------------------------------------

    private void CancelPendingReads()
    {
        foreach (var pending in _pendingReads.Values)
        {
            try { pending.Cancel(); } catch (ObjectDisposedException) { }
        }
    }

    /// <summary>
    /// Unmounts and stops. Pending reads are cancelled (their readers get an error); if the kernel
    /// still holds the connection (files open on a lazily detached mount), it is aborted through
    /// fusectl so no reader and no thread is left hanging.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        CancelPendingReads();
        bool mounted = FuseMounter.IsMountPoint(_mountPoint);
        if (mounted && !FuseMounter.TryUnmount(_mountPoint, lazy: false))
            FuseMounter.TryUnmount(_mountPoint, lazy: true);
        if (!WaitForReaders(TimeSpan.FromSeconds(2)) && _deviceId != 0)
        {
            FuseMounter.AbortConnection(FuseMounter.DeviceMinor(_deviceId));
            WaitForReaders(TimeSpan.FromSeconds(5));
        }
        if (Volatile.Read(ref _runningReaders) == 0)
        {
            // Only close once no thread can still be inside read() on these fds (fd reuse would be a disaster).
            foreach (int fd in _fds) Libc.Close(fd);
            _fds.Clear();
            _splicer.Dispose();
        }
        else _logger.LogWarning("FUSE reader threads for {MountPoint} did not stop; leaving their fds open", _mountPoint);
        _completion.TrySetResult();
    }

    private bool WaitForReaders(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        foreach (var t in _threads)
        {
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero || !t.Join(left)) return false;
        }
        return true;
    }

    /// <summary>Pinned reply buffers for READ, reused; a miss keeps its buffer until the fetch completes.</summary>
    private sealed class BufferPool(int size)
    {
        private readonly Stack<byte[]> _free = new();
        private readonly Lock _lock = new(); // guards _free

        public byte[] Rent()
        {
            lock (_lock)
                if (_free.TryPop(out var b)) return b;
            return GC.AllocateArray<byte>(size, pinned: true);
        }

        public void Return(byte[] buffer)
        {
            lock (_lock)
                if (_free.Count < 256) _free.Push(buffer);
        }
    }
}
