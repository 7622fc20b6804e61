using System.Runtime.CompilerServices;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>Every struct must match linux/fuse_kernel.h byte for byte (x86_64).</summary>
public class AbiTests
{
    [Fact] public void InHeader() => Assert.Equal(40, Unsafe.SizeOf<FuseInHeader>());
    [Fact] public void OutHeader() => Assert.Equal(16, Unsafe.SizeOf<FuseOutHeader>());
    [Fact] public void InitIn() => Assert.Equal(64, Unsafe.SizeOf<FuseInitIn>());
    [Fact] public void InitOut() => Assert.Equal(64, Unsafe.SizeOf<FuseInitOut>());
    [Fact] public void Attr() => Assert.Equal(88, Unsafe.SizeOf<FuseAttr>());
    [Fact] public void EntryOut() => Assert.Equal(128, Unsafe.SizeOf<FuseEntryOut>());
    [Fact] public void AttrOut() => Assert.Equal(104, Unsafe.SizeOf<FuseAttrOut>());
    [Fact] public void OpenIn() => Assert.Equal(8, Unsafe.SizeOf<FuseOpenIn>());
    [Fact] public void OpenOut() => Assert.Equal(16, Unsafe.SizeOf<FuseOpenOut>());
    [Fact] public void ReadIn() => Assert.Equal(40, Unsafe.SizeOf<FuseReadIn>());
    [Fact] public void ReleaseIn() => Assert.Equal(24, Unsafe.SizeOf<FuseReleaseIn>());
    [Fact] public void ForgetIn() => Assert.Equal(8, Unsafe.SizeOf<FuseForgetIn>());
    [Fact] public void BatchForgetIn() => Assert.Equal(8, Unsafe.SizeOf<FuseBatchForgetIn>());
    [Fact] public void ForgetOne() => Assert.Equal(16, Unsafe.SizeOf<FuseForgetOne>());
    [Fact] public void GetAttrIn() => Assert.Equal(16, Unsafe.SizeOf<FuseGetAttrIn>());
    [Fact] public void KStatFs() => Assert.Equal(80, Unsafe.SizeOf<FuseKStatFs>());
    [Fact] public void Dirent() => Assert.Equal(24, Unsafe.SizeOf<FuseDirent>());
    [Fact] public void InterruptIn() => Assert.Equal(8, Unsafe.SizeOf<FuseInterruptIn>());
    [Fact] public void AccessIn() => Assert.Equal(8, Unsafe.SizeOf<FuseAccessIn>());
    [Fact] public void GetXattrIn() => Assert.Equal(8, Unsafe.SizeOf<FuseGetXattrIn>());
    [Fact] public void BackingMap() => Assert.Equal(16, Unsafe.SizeOf<FuseBackingMap>());
    [Fact] public void NotifyInvalEntry() => Assert.Equal(16, Unsafe.SizeOf<FuseNotifyInvalEntryOut>());
    [Fact] public void NotifyInvalInode() => Assert.Equal(24, Unsafe.SizeOf<FuseNotifyInvalInodeOut>());
    [Fact] public void LibcStat() => Assert.Equal(144, Unsafe.SizeOf<Stat>());
    [Fact] public void MsgHdr() => Assert.Equal(56, Unsafe.SizeOf<Interop.MsgHdr>());

    [Fact]
    public void IoctlNumbersMatchTheKernelMacros()
    {
        // _IOC(dir, type, nr, size) = dir << 30 | size << 16 | type << 8 | nr; _IOR = 2, _IOW = 1.
        static ulong Ioc(ulong dir, ulong type, ulong nr, ulong size) => dir << 30 | size << 16 | type << 8 | nr;
        Assert.Equal(FuseConstants.DevIocClone, Ioc(2, 229, 0, 4));
        Assert.Equal(FuseConstants.DevIocBackingOpen, Ioc(1, 229, 1, 16));
        Assert.Equal(FuseConstants.DevIocBackingClose, Ioc(1, 229, 2, 4));
    }
}

public class RequestReaderTests
{
    [Fact]
    public void ShortInputIsRefusedNotThrown()
    {
        var reader = new RequestReader(new byte[10]);
        Assert.False(reader.TryRead(out FuseReadIn _));
        Assert.Equal(10, reader.Remaining.Length);
    }

    [Fact]
    public void NameWithoutTerminatorIsRefused()
    {
        var reader = new RequestReader("abc"u8);
        Assert.False(reader.TryReadName(out _));
        var ok = new RequestReader("abc\0rest"u8);
        Assert.True(ok.TryReadName(out var name));
        Assert.Equal("abc"u8.ToArray(), name.ToArray());
        Assert.Equal("rest"u8.ToArray(), ok.Remaining.ToArray());
    }

    [Fact]
    public void DirectoryListingPadsEntriesToEightBytesAndStopsWhenFull()
    {
        var buffer = new byte[64];
        var listing = new DirectoryListing(buffer, plus: false);
        Assert.True(listing.TryAdd("a"u8, 5, FuseConstants.DirentTypeReg, 1, default)); // 24 + 1 -> 32
        Assert.Equal(32, listing.Length);
        Assert.True(listing.TryAdd("abcdefgh"u8, 6, FuseConstants.DirentTypeReg, 2, default)); // 24 + 8 -> 32
        Assert.Equal(64, listing.Length);
        Assert.False(listing.TryAdd("x"u8, 7, FuseConstants.DirentTypeReg, 3, default));
        Assert.Equal((byte)'a', buffer[24]);
        Assert.Equal(0, buffer[25]); // padding is zeroed
    }
}
