using System.Runtime.InteropServices;

namespace MlArtifactFs.Fuse.Protocol;

// Structs copied field by field from linux/fuse_kernel.h (protocol 7.45), blittable, with explicit
// padding. Sizes are asserted in tests (AbiTests); a wrong size corrupts every request after it.
#pragma warning disable CA1051 // ABI structs expose fields on purpose

[StructLayout(LayoutKind.Sequential)]
public struct FuseInHeader
{
    public uint Len;
    public FuseOpcode Opcode;
    public ulong Unique;
    public ulong NodeId;
    public uint Uid, Gid, Pid;
    public ushort TotalExtLen;
    public ushort Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseOutHeader
{
    public uint Len;
    public int Error;
    public ulong Unique;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseInitIn
{
    /// <summary>What kernels before 7.36 send: major, minor, max_readahead, flags (16 bytes).</summary>
    public const int CompatSize = 16;

    public uint Major, Minor, MaxReadahead, Flags, Flags2;
    public fixed uint Unused[11];
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseInitOut
{
    public uint Major, Minor, MaxReadahead, Flags;
    public ushort MaxBackground, CongestionThreshold;
    public uint MaxWrite, TimeGran;
    public ushort MaxPages, MapAlignment;
    public uint Flags2, MaxStackDepth;
    public ushort RequestTimeout;
    public fixed ushort Unused[11];
}

/// <summary>struct fuse_attr: what stat(2) shows for a node.</summary>
[StructLayout(LayoutKind.Sequential)]
public struct FuseAttr
{
    public ulong Ino, Size, Blocks, ATime, MTime, CTime;
    public uint ATimeNsec, MTimeNsec, CTimeNsec, Mode, NLink, Uid, Gid, RDev, BlkSize, Flags;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseEntryOut
{
    public ulong NodeId, Generation, EntryValid, AttrValid;
    public uint EntryValidNsec, AttrValidNsec;
    public FuseAttr Attr;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseAttrOut
{
    public ulong AttrValid;
    public uint AttrValidNsec, Dummy;
    public FuseAttr Attr;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseOpenIn
{
    public uint Flags, OpenFlags;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseOpenOut
{
    public ulong Fh;
    public uint OpenFlags;
    public int BackingId;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseReadIn
{
    public ulong Fh, Offset;
    public uint Size, ReadFlags;
    public ulong LockOwner;
    public uint Flags, Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseReleaseIn
{
    public ulong Fh;
    public uint Flags, ReleaseFlags;
    public ulong LockOwner;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseForgetIn
{
    public ulong NLookup;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseBatchForgetIn
{
    public uint Count, Dummy;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseForgetOne
{
    public ulong NodeId, NLookup;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseGetAttrIn
{
    public uint GetAttrFlags, Dummy;
    public ulong Fh;
}

[StructLayout(LayoutKind.Sequential)]
public unsafe struct FuseKStatFs
{
    public ulong Blocks, BFree, BAvail, Files, FFree;
    public uint BSize, NameLen, FrSize, Padding;
    public fixed uint Spare[6];
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseDirent
{
    public ulong Ino, Off;
    public uint NameLen, Type;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseInterruptIn
{
    public ulong Unique;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseAccessIn
{
    public uint Mask, Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseGetXattrIn
{
    public uint Size, Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseGetXattrOut
{
    public uint Size, Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseBackingMap
{
    public int Fd;
    public uint Flags;
    public ulong Padding;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseNotifyInvalEntryOut
{
    public ulong Parent;
    public uint NameLen, Flags;
}

[StructLayout(LayoutKind.Sequential)]
public struct FuseNotifyInvalInodeOut
{
    public ulong Ino;
    public long Off, Len;
}
#pragma warning restore CA1051
