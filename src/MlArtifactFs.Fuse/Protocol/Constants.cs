namespace MlArtifactFs.Fuse.Protocol;

public enum FuseOpcode : uint
{
    Lookup = 1, Forget = 2, GetAttr = 3, SetAttr = 4, ReadLink = 5, Symlink = 6, MkNod = 8, MkDir = 9,
    Unlink = 10, RmDir = 11, Rename = 12, Link = 13, Open = 14, Read = 15, Write = 16, StatFs = 17,
    Release = 18, FSync = 20, SetXattr = 21, GetXattr = 22, ListXattr = 23, RemoveXattr = 24, Flush = 25,
    Init = 26, OpenDir = 27, ReadDir = 28, ReleaseDir = 29, FSyncDir = 30, GetLk = 31, SetLk = 32,
    SetLkW = 33, Access = 34, Create = 35, Interrupt = 36, BMap = 37, Destroy = 38, Ioctl = 39, Poll = 40,
    NotifyReply = 41, BatchForget = 42, FAllocate = 43, ReadDirPlus = 44, Rename2 = 45, LSeek = 46,
    CopyFileRange = 47, SetupMapping = 48, RemoveMapping = 49, SyncFs = 50, TmpFile = 51, Statx = 52,
    CopyFileRange64 = 53,
}

/// <summary>INIT flags (flags | flags2 &lt;&lt; 32), fuse_kernel.h.</summary>
[Flags]
public enum FuseInitFlags : ulong
{
    None = 0,
    AsyncRead = 1UL << 0,
    BigWrites = 1UL << 5,
    AutoInvalData = 1UL << 12,
    DoReaddirplus = 1UL << 13,
    ReaddirplusAuto = 1UL << 14,
    AsyncDio = 1UL << 15,
    ParallelDirops = 1UL << 18,
    MaxPages = 1UL << 22,
    CacheSymlinks = 1UL << 23,
    NoOpendirSupport = 1UL << 24,
    ExplicitInvalData = 1UL << 25,
    InitExt = 1UL << 30,
    Passthrough = 1UL << 37,
    NoExportSupport = 1UL << 38,
    OverIoUring = 1UL << 41,
}

/// <summary>FOPEN_* flags in fuse_open_out.open_flags.</summary>
[Flags]
public enum FuseOpenFlags : uint
{
    None = 0,
    DirectIo = 1 << 0,
    KeepCache = 1 << 1,
    NonSeekable = 1 << 2,
    CacheDir = 1 << 3,
    Stream = 1 << 4,
    NoFlush = 1 << 5,
    Passthrough = 1 << 7,
}

public static class FuseConstants
{
    public const uint KernelMajor = 7;
    /// <summary>The minor version we speak; the kernel picks the smaller of ours and its own.</summary>
    public const uint KernelMinor = 45;
    public const uint MinSupportedMinor = 31;
    public const ulong RootId = 1;

    public const ulong DevIocClone = 0x8004E500;        // _IOR(229, 0, uint32_t)
    public const ulong DevIocBackingOpen = 0x4010E501;  // _IOW(229, 1, struct fuse_backing_map)
    public const ulong DevIocBackingClose = 0x4004E502; // _IOW(229, 2, uint32_t)

    public const int NotifyInvalInode = 2;
    public const int NotifyInvalEntry = 3;

    public const uint DirentTypeDir = 4, DirentTypeReg = 8;
}
