using Microsoft.Win32.SafeHandles;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Cache;

/// <summary>
/// Opening what the cache keeps, without trusting the path. The cache directory may sit where another
/// user could have prepared things (as root, under /tmp), so: directories are used only when they are
/// real directories owned by us and writable by nobody else; files are opened with O_NOFOLLOW (and
/// O_EXCL when created) and checked, through the opened descriptor, to be regular files we own with
/// no group or other access. Anything else is refused with an error that names the path; nothing is
/// chmod-ed, truncated or written through a path that failed these checks.
/// </summary>
public static class CacheFiles
{
    private const int O_WRONLY = 1, O_CREAT = 0x40, O_EXCL = 0x80, O_APPEND = 0x400, O_NOFOLLOW = 0x20000, O_DIRECTORY = 0x10000;
    private const int EEXIST = 17, ELOOP = 40;
    private const uint PrivateMask = 0x3F; // group and other bits
    private static readonly uint Uid = Libc.GetUid();

    /// <summary>
    /// Creates <paramref name="path"/> 0700 if missing; uses an existing one only when it is a real
    /// directory of ours that neither group nor others may write. Never chmods anything: a directory
    /// others may write (/tmp, a fresh tmpfs) is refused with a message that names it, whoever owns it.
    /// </summary>
    public static void EnsurePrivateDirectory(string path)
    {
        try { Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute); }
        catch (IOException) { } // a file (or a dangling link) in the way: the check below names it
        if (Libc.LStat(path, out var st) != 0)
            throw new UnsafeCachePathException($"directory {path}: {Libc.StrError(Libc.LastErrno)}");
        if ((st.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
            throw new UnsafeCachePathException($"directory {path} is a symbolic link; refusing to use it");
        if (!st.IsDirectory)
            throw new UnsafeCachePathException($"{path} exists and is not a directory");
        if (st.Uid != Uid)
            throw new UnsafeCachePathException($"directory {path} belongs to uid {st.Uid}, not to this process (uid {Uid}); refusing to use it");
        if ((st.Mode & 0x12) != 0) // group or other may write: someone else could swap its entries
            throw new UnsafeCachePathException($"directory {path} is writable by group or others (mode {Convert.ToString(st.Mode & 0xFFF, 8)}); use a private directory (0700)");
    }

    /// <summary>Opens an existing cache file read-write; null when it does not exist. Throws when it is not ours.</summary>
    public static SafeFileHandle? OpenExisting(string path) => Open(path, Libc.O_RDWR, mustCreate: false);

    /// <summary>Creates a new cache file (O_EXCL); null when the name exists already.</summary>
    public static SafeFileHandle? Create(string path) => Open(path, Libc.O_RDWR | O_CREAT | O_EXCL, mustCreate: true);

    /// <summary>Opens a cache file for appending (the record): several processes append whole entries with O_APPEND.</summary>
    public static int OpenAppend(string path)
    {
        int fd = Libc.Open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | Libc.O_CLOEXEC);
        if (fd < 0) throw new IOException($"cannot open {path} for appending: {Libc.StrError(Libc.LastErrno)}");
        try { CheckOwned(fd, path); }
        catch { Libc.Close(fd); throw; }
        return fd;
    }

    /// <summary>
    /// Opens a data file of ours a second time with O_DIRECT, for writes that skip the page cache; -1 where
    /// the file system does not take O_DIRECT (tmpfs before 6.6, some overlays) or the name is no longer
    /// the file <paramref name="opened"/> is.
    /// </summary>
    public static int OpenDirect(string path, SafeFileHandle opened)
    {
        const int O_DIRECT = 0x4000;
        int fd = Libc.Open(path, Libc.O_RDWR | O_DIRECT | O_NOFOLLOW | Libc.O_CLOEXEC);
        if (fd < 0) return -1;
        if (Libc.FStat(fd, out var st) != 0 || Libc.FStat(Fd(opened), out var ours) != 0 || st.Ino != ours.Ino || st.Dev != ours.Dev)
        {
            Libc.Close(fd);
            return -1;
        }
        return fd;
    }

    /// <summary>Opens (creating if needed) a lock file; -1 when it cannot be opened safely.</summary>
    public static int OpenLock(string path)
    {
        int fd = Libc.Open(path, Libc.O_RDWR | O_CREAT | O_NOFOLLOW | Libc.O_CLOEXEC, 0x180);
        if (fd < 0) return -1;
        try { CheckOwned(fd, path); }
        catch (UnsafeCachePathException) { Libc.Close(fd); throw; }
        return fd;
    }

    private static SafeFileHandle? Open(string path, int flags, bool mustCreate)
    {
        int fd = Libc.Open(path, flags | O_NOFOLLOW | Libc.O_CLOEXEC, 0x180 /* 0600 */);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            if (!mustCreate && errno == Libc.ENOENT) return null;
            if (mustCreate && errno == EEXIST) return null;
            if (errno == ELOOP) throw new UnsafeCachePathException($"cache file {path} is a symbolic link; refusing to follow it");
            throw new IOException($"cannot open cache file {path}: {Libc.StrError(errno)}");
        }
        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try { CheckOwned(fd, path); }
        catch { handle.Dispose(); throw; }
        return handle;
    }

    /// <summary>What was opened must be a regular file of ours that only we can read and write.</summary>
    private static void CheckOwned(int fd, string path)
    {
        if (Libc.FStat(fd, out var st) != 0) throw new IOException($"cannot stat cache file {path}: {Libc.StrError(Libc.LastErrno)}");
        if (!st.IsRegularFile) throw new UnsafeCachePathException($"cache file {path} is not a regular file; refusing to use it");
        if (st.Uid != Uid) throw new UnsafeCachePathException($"cache file {path} belongs to uid {st.Uid}, not to this process (uid {Uid}); refusing to use it");
        if ((st.Mode & PrivateMask) != 0) throw new UnsafeCachePathException($"cache file {path} is readable or writable by others (mode {Convert.ToString(st.Mode & 0xFFF, 8)}); refusing to use it");
    }

    public static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    private const int EDQUOT = 122;

    /// <summary>A write failed because the disk (or the user's quota) is full: the cache degrades, reads go on.</summary>
    public static bool IsDiskFull(IOException e) => IsDiskFullErrno(e.HResult & 0xFFFF);

    public static bool IsDiskFullErrno(int errno) => errno is Libc.ENOSPC or EDQUOT;
}
