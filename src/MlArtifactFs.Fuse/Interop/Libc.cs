using System.Runtime.InteropServices;

namespace MlArtifactFs.Fuse.Interop;

/// <summary>
/// The few libc calls the FUSE layer and the cache need, declared the way dotnet/runtime does:
/// LibraryImport, SetLastError, errno read back with Marshal.GetLastPInvokeError.
/// </summary>
public static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int O_RDONLY = 0, O_RDWR = 2, O_CLOEXEC = 0x80000;
    public const int EPERM = 1, ENOENT = 2, EINTR = 4, EIO = 5, EBADF = 9, EAGAIN = 11, ENOMEM = 12, EACCES = 13,
        EBUSY = 16, EEXIST = 17, ENOTDIR = 20, EISDIR = 21, EINVAL = 22, ENOSPC = 28, EROFS = 30,
        ERANGE = 34, ENOSYS = 38, ENOTEMPTY = 39, ENODATA = 61, ENOTCONN = 107, ETIMEDOUT = 110, ECANCELED = 125, EPROTO = 71, ENODEV = 19;
    public const uint S_IFMT = 0xF000, S_IFDIR = 0x4000, S_IFREG = 0x8000, S_IFLNK = 0xA000;
    public const int MNT_DETACH = 2;
    public const ulong MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4;

    [LibraryImport(Lib, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Open(string path, int flags, int mode = 0);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nint count);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nint count);

    [LibraryImport(Lib, EntryPoint = "writev", SetLastError = true)]
    public static partial nint Writev(int fd, IoVec* iov, int iovcnt);

    [LibraryImport(Lib, EntryPoint = "pread", SetLastError = true)]
    public static partial nint PRead(int fd, byte* buf, nint count, long offset);

    public const int MADV_HUGEPAGE = 14;

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(void* address, nuint length, int advice);

    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)]
    public static partial nint PWrite(int fd, byte* buf, nint count, long offset);

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int Ioctl(int fd, ulong request, void* arg);

    [LibraryImport(Lib, EntryPoint = "mount", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Mount(string source, string target, string fstype, ulong flags, string data);

    [LibraryImport(Lib, EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport(Lib, EntryPoint = "stat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int StatRaw(string path, Stat* buf);

    [LibraryImport(Lib, EntryPoint = "lstat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int LStatRaw(string path, Stat* buf);

    [LibraryImport(Lib, EntryPoint = "fstat", SetLastError = true)]
    private static partial int FStatRaw(int fd, Stat* buf);

    /// <summary>Replaces this process with <paramref name="path"/> (argv ends with a null); returns only on failure.</summary>
    [LibraryImport(Lib, EntryPoint = "execv", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    public static partial int Execv(string path, nint[] argv);

    [LibraryImport(Lib, EntryPoint = "getuid")]
    public static partial uint GetUid();

    [LibraryImport(Lib, EntryPoint = "getgid")]
    public static partial uint GetGid();

    [LibraryImport(Lib, EntryPoint = "socketpair", SetLastError = true)]
    public static partial int SocketPair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, EntryPoint = "recvmsg", SetLastError = true)]
    public static partial nint RecvMsg(int fd, MsgHdr* msg, int flags);

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int Fcntl(int fd, int cmd, int arg);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long len);

    /// <summary>struct flock (x86-64/arm64 layout), for open file description record locks.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct FLock
    {
        public short Type, Whence;
        public long Start, Length;
        public int Pid; // 0 for OFD locks
    }

    [LibraryImport(Lib, EntryPoint = "fcntl", SetLastError = true)]
    public static partial int FcntlLock(int fd, int cmd, FLock* lk);

    /// <summary>Record locks owned by the open file description (Linux 3.15): per descriptor, not per process.</summary>
    public const int F_OFD_SETLK = 37, F_OFD_SETLKW = 38;
    public const short F_RDLCK = 0, F_WRLCK = 1, F_UNLCK = 2;

    public const int LOCK_SH = 1, LOCK_EX = 2, LOCK_NB = 4, LOCK_UN = 8;
    public const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;

    [LibraryImport(Lib, EntryPoint = "flock", SetLastError = true)]
    public static partial int Flock(int fd, int operation);

    public const int O_NONBLOCK = 0x800, F_SETPIPE_SZ = 1031, F_GETPIPE_SZ = 1032;

    [LibraryImport(Lib, EntryPoint = "pipe2", SetLastError = true)]
    public static partial int Pipe2(int* fds, int flags);

    [LibraryImport(Lib, EntryPoint = "splice", SetLastError = true)]
    public static partial nint Splice(int fdIn, long* offIn, int fdOut, long* offOut, nuint length, uint flags);

    [LibraryImport(Lib, EntryPoint = "statfs", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int StatFsRaw(string path, byte* buf);

    /// <summary>statfs(2), for its errno only: on a FUSE mount it always reaches the daemon (ENOTCONN when dead).</summary>
    public static int StatFs(string path)
    {
        byte* buf = stackalloc byte[256]; // struct statfs is 120 bytes on x86_64
        return StatFsRaw(path, buf);
    }

    public static int LastErrno => Marshal.GetLastPInvokeError();

    public static int Stat(string path, out Stat st) { fixed (Stat* p = &st) return StatRaw(path, p); }
    public static int LStat(string path, out Stat st) { fixed (Stat* p = &st) return LStatRaw(path, p); }
    public static int FStat(int fd, out Stat st) { fixed (Stat* p = &st) return FStatRaw(fd, p); }

    public static string StrError(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}

/// <summary>struct iovec.</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct IoVec
{
    public void* Base;
    public nuint Length;
}

/// <summary>struct msghdr (x86_64).</summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct MsgHdr
{
    public void* Name;
    public uint NameLen;
    public IoVec* Iov;
    public nuint IovLen;
    public void* Control;
    public nuint ControlLen;
    public int Flags;
}

/// <summary>struct stat for x86_64 glibc (144 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
public struct Stat
{
    public ulong Dev, Ino, NLink;
    public uint Mode, Uid, Gid;
    private readonly int _pad0;
    public ulong RDev;
    public long Size, BlkSize, Blocks;
    public long ATimeSec, ATimeNsec, MTimeSec, MTimeNsec, CTimeSec, CTimeNsec;
    private readonly long _reserved0, _reserved1, _reserved2;

    public readonly bool IsDirectory => (Mode & Libc.S_IFMT) == Libc.S_IFDIR;
    public readonly bool IsRegularFile => (Mode & Libc.S_IFMT) == Libc.S_IFREG;
}
