using System.Diagnostics;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Fuse;

/// <summary>A mount that cannot be made; the message says what to do about it.</summary>
public sealed class FuseMountException(string message, int errno = 0) : Exception(message)
{
    public int Errno { get; } = errno;
}

/// <summary>
/// Mounting and unmounting: mount(2) directly as root, else fusermount3 (the fd comes back over a
/// socketpair in an SCM_RIGHTS message). Also the checks that turn a confusing kernel errno into
/// a message: missing mount point, not a directory, already mounted, a dead mount left by a crash.
/// </summary>
public static unsafe class FuseMounter
{
    public static bool IsRoot => Libc.GetUid() == 0;

    /// <summary>
    /// Validates the mount point, clearing a dead FUSE mount ("Transport endpoint is not connected") if we
    /// can. Refused: a FUSE mount sitting there (a live mlfs or another FUSE file system) and a non-empty
    /// directory. An empty directory that is itself a mount is fine: that is what a container's
    /// `-v /mnt/model:/mnt/model:rshared` or a Kubernetes hostPath with Bidirectional propagation gives.
    /// </summary>
    public static void CheckMountPoint(string mountPoint)
    {
        if (Libc.Stat(mountPoint, out var st) != 0)
        {
            int errno = Libc.LastErrno;
            if (errno == Libc.ENOTCONN)
            {
                // A FUSE daemon died without unmounting. Detaching it is safe: nothing can be read through it anyway.
                if (!TryUnmount(mountPoint, lazy: true))
                    throw new FuseMountException(
                        $"mount point {mountPoint} holds a dead FUSE mount (transport endpoint is not connected) that could not be cleared; run: fusermount3 -uz {mountPoint}  (or umount -l {mountPoint})", errno);
                if (Libc.Stat(mountPoint, out st) != 0)
                    throw new FuseMountException($"mount point {mountPoint}: {Libc.StrError(Libc.LastErrno)} after clearing a dead mount", errno);
            }
            else if (errno == Libc.ENOENT)
                throw new FuseMountException($"mount point {mountPoint} does not exist; create it with: mkdir -p {mountPoint}", errno);
            else
                throw new FuseMountException($"mount point {mountPoint}: {Libc.StrError(errno)}", errno);
        }
        if (!st.IsDirectory)
            throw new FuseMountException($"mount point {mountPoint} is not a directory", Libc.ENOTDIR);
        if (IsMountPoint(mountPoint) && Libc.StatFs(mountPoint) != 0 && Libc.LastErrno == Libc.ENOTCONN)
        {
            // A dead FUSE mount whose root attributes the kernel still had cached (stat succeeded): clear it too.
            TryUnmount(mountPoint, lazy: true);
        }
        if (MountedTypeAt(mountPoint) is { } type && (type == "fuse" || type.StartsWith("fuse.", StringComparison.Ordinal)))
            throw new FuseMountException(
                $"mount point {mountPoint} is busy: a FUSE file system ({type}) is already mounted there; unmount it first (fusermount3 -u {mountPoint} or umount {mountPoint})", Libc.EBUSY);
        bool empty;
        try { empty = !Directory.EnumerateFileSystemEntries(mountPoint).Any(); }
        catch (UnauthorizedAccessException) { empty = true; } // cannot list it: the mount itself will say what is wrong
        if (!empty)
            throw new FuseMountException(
                $"mount point {mountPoint} is not empty: mounting there would hide its files; use an empty directory", Libc.EBUSY);
    }

    /// <summary>The file system type mounted on top at exactly <paramref name="path"/> (per /proc/self/mountinfo), or null.</summary>
    public static string? MountedTypeAt(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        if (full.Length == 0) full = "/";
        string? type = null;
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // "id parent major:minor root mountpoint options [optional...] - fstype source superoptions"
            var fields = line.Split(' ');
            if (fields.Length <= 4 || UnescapeMountPath(fields[4]) != full) continue;
            int dash = Array.IndexOf(fields, "-", 5);
            if (dash > 0 && dash + 1 < fields.Length) type = fields[dash + 1]; // later lines are mounted on top
        }
        return type;
    }

    /// <summary>True when a file system is mounted exactly at <paramref name="path"/> (per /proc/self/mountinfo).</summary>
    public static bool IsMountPoint(string path)
    {
        string full = Path.GetFullPath(path).TrimEnd('/');
        if (full.Length == 0) full = "/";
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            var fields = line.Split(' ');
            if (fields.Length > 4 && UnescapeMountPath(fields[4]) == full) return true;
        }
        return false;
    }

    private static string UnescapeMountPath(string s) =>
        s.Contains('\\') ? s.Replace("\\040", " ").Replace("\\011", "\t").Replace("\\012", "\n").Replace("\\134", "\\") : s;

    /// <summary>Opens /dev/fuse and mounts it; returns the device fd.</summary>
    public static int Mount(FuseMountOptions options)
    {
        string mountPoint = Path.GetFullPath(options.MountPoint);
        if (!File.Exists("/dev/fuse") && !Path.Exists("/dev/fuse"))
            throw new FuseMountException("/dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, run with --device /dev/fuse --cap-add SYS_ADMIN");
        CheckMountPoint(mountPoint);
        return IsRoot ? MountWithSyscall(options, mountPoint) : MountWithFusermount(options, mountPoint);
    }

    private static int MountWithSyscall(FuseMountOptions options, string mountPoint)
    {
        int fd = Libc.Open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = Libc.LastErrno;
            throw new FuseMountException($"cannot open /dev/fuse: {Libc.StrError(errno)}" +
                (errno is Libc.EACCES or Libc.EPERM ? " (in a container, add --device /dev/fuse --cap-add SYS_ADMIN)" : ""), errno);
        }
        string data = $"fd={fd},rootmode=40000,user_id={Libc.GetUid()},group_id={Libc.GetGid()},default_permissions"
                      + (options.AllowOther ? ",allow_other" : "");
        ulong flags = Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV;
        if (Libc.Mount(OptionValue(options.FsName), mountPoint, "fuse." + OptionValue(options.Subtype), flags, data) != 0)
        {
            int errno = Libc.LastErrno;
            Libc.Close(fd);
            throw new FuseMountException(errno switch
            {
                Libc.EPERM => $"mount {mountPoint}: permission denied (needs CAP_SYS_ADMIN; in a container add --cap-add SYS_ADMIN)",
                Libc.EBUSY => $"mount {mountPoint}: busy (already mounted?)",
                Libc.ENODEV => "mount: the kernel has no FUSE support (modprobe fuse)",
                _ => $"mount {mountPoint}: {Libc.StrError(errno)}",
            }, errno);
        }
        return fd;
    }

    /// <summary>
    /// A name as it may appear in mount options: commas and '=' would inject options (fusermount3 parses
    /// "-o a,b=c"), and blanks, backslashes and control characters would garble /proc/mounts; each becomes '_'.
    /// </summary>
    public static string OptionValue(string value)
    {
        var chars = value.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
            if (chars[i] is ',' or '=' or '\\' || char.IsWhiteSpace(chars[i]) || char.IsControl(chars[i])) chars[i] = '_';
        return new string(chars);
    }

    private const int AF_UNIX = 1, SOCK_STREAM = 1, SOL_SOCKET = 1, SCM_RIGHTS = 1, F_SETFD = 2, FD_CLOEXEC = 1;

    private static int MountWithFusermount(FuseMountOptions options, string mountPoint)
    {
        string? fusermount = FindOnPath("fusermount3");
        if (fusermount is null)
            throw new FuseMountException("not running as root and fusermount3 is not installed: run as root, or install it (apt-get install fuse3)");
        int* sv = stackalloc int[2];
        if (Libc.SocketPair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            throw new FuseMountException($"socketpair: {Libc.StrError(Libc.LastErrno)}");
        Libc.Fcntl(sv[0], F_SETFD, FD_CLOEXEC); // our end stays ours; sv[1] is inherited by fusermount3
        try
        {
            string opts = $"ro,nosuid,nodev,default_permissions,fsname={OptionValue(options.FsName)},subtype={OptionValue(options.Subtype)}"
                          + (options.AllowOther ? ",allow_other" : "");
            var psi = new ProcessStartInfo(fusermount) { RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add("-o");
            psi.ArgumentList.Add(opts);
            psi.ArgumentList.Add("--");
            psi.ArgumentList.Add(mountPoint);
            psi.Environment["_FUSE_COMMFD"] = sv[1].ToString(System.Globalization.CultureInfo.InvariantCulture);
            using var process = Process.Start(psi)!;
            Libc.Close(sv[1]);
            sv[1] = -1;
            int fd = ReceiveFd(sv[0]);
            process.WaitForExit();
            string stderr = process.StandardError.ReadToEnd().Trim();
            if (fd < 0)
                throw new FuseMountException($"fusermount3 could not mount {mountPoint}: {(stderr.Length > 0 ? stderr : "exit code " + process.ExitCode)}");
            Libc.Fcntl(fd, F_SETFD, FD_CLOEXEC);
            return fd;
        }
        finally
        {
            Libc.Close(sv[0]);
            if (sv[1] >= 0) Libc.Close(sv[1]);
        }
    }

    private static int ReceiveFd(int socket)
    {
        byte data;
        var iov = new IoVec { Base = &data, Length = 1 };
        const int controlLen = 24; // CMSG_SPACE(sizeof(int)) on x86_64
        byte* control = stackalloc byte[controlLen];
        var msg = new MsgHdr { Iov = &iov, IovLen = 1, Control = control, ControlLen = controlLen };
        nint n;
        do n = Libc.RecvMsg(socket, &msg, 0); while (n < 0 && Libc.LastErrno == Libc.EINTR);
        if (n <= 0 || msg.ControlLen < 20) return -1;
        // struct cmsghdr { size_t len; int level; int type; } then the fd.
        int level = *(int*)(control + 8), type = *(int*)(control + 12);
        return level == SOL_SOCKET && type == SCM_RIGHTS ? *(int*)(control + 16) : -1;
    }

    /// <summary>Unmounts; lazily (detach now, finish when the last open file closes) if asked.</summary>
    public static bool TryUnmount(string mountPoint, bool lazy)
    {
        if (IsRoot)
            return Libc.Umount2(mountPoint, lazy ? Libc.MNT_DETACH : 0) == 0;
        string? fusermount = FindOnPath("fusermount3");
        if (fusermount is null) return false;
        var psi = new ProcessStartInfo(fusermount) { UseShellExecute = false, RedirectStandardError = true };
        psi.ArgumentList.Add(lazy ? "-uz" : "-u");
        psi.ArgumentList.Add(mountPoint);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    /// <summary>
    /// Aborts the FUSE connection through fusectl: every pending and future request fails (ENOTCONN)
    /// and blocked device reads return, so nothing hangs on a slow or dead daemon.
    /// </summary>
    public static void AbortConnection(ulong deviceId)
    {
        const string fusectl = "/sys/fs/fuse/connections";
        try
        {
            if (!Directory.Exists(Path.Combine(fusectl, deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture))) && IsRoot)
                Libc.Mount("fusectl", fusectl, "fusectl", 0, "");
            File.WriteAllText(Path.Combine(fusectl, deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture), "abort"), "1");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    public static string? FindOnPath(string name)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    /// <summary>Minor number of the mount's anonymous device: names its bdi (0:N) and fusectl entry.</summary>
    public static ulong DeviceMinor(ulong dev) => (dev & 0xff) | ((dev >> 12) & 0xfff00);

    public static ulong DeviceMajor(ulong dev) => ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xfffff000);
}
