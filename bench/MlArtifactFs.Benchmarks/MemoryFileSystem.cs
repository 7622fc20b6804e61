using MlArtifactFs.Fuse;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Benchmarks;

/// <summary>
/// One file of constant bytes served from memory: what is left of a READ is the FUSE protocol
/// itself (kernel round trip, parse, dispatch, reply), which is what these benchmarks measure.
/// </summary>
public sealed class MemoryFileSystem(long size) : IFuseFileSystem
{
    public const ulong FileId = 2;
    private static readonly byte[] Name = "data.bin"u8.ToArray();

    private void FillFile(out FuseAttr attr)
    {
        attr = default;
        attr.Ino = FileId;
        attr.Mode = Libc.S_IFREG | 0x124;
        attr.NLink = 1;
        attr.Size = (ulong)size;
        attr.Blocks = attr.Size / 512;
        attr.BlkSize = 1 << 20;
    }

    public Errno Lookup(ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        if (parent != FuseConstants.RootId || !name.SequenceEqual(Name)) return Errno.ENOENT;
        entry.NodeId = FileId;
        FillFile(out entry.Attr);
        return Errno.Ok;
    }

    public Errno GetAttr(ulong node, out FuseAttr attr)
    {
        attr = default;
        if (node == FileId)
        {
            FillFile(out attr);
            return Errno.Ok;
        }
        attr.Ino = FuseConstants.RootId;
        attr.Mode = Libc.S_IFDIR | 0x16D;
        attr.NLink = 2;
        return Errno.Ok;
    }

    public Errno Open(ulong node, int flags, out FuseOpenResult result)
    {
        result = new FuseOpenResult { Handle = 1 };
        return Errno.Ok;
    }

    public ValueTask<ReadResult> ReadAsync(ulong node, ulong handle, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        int n = (int)Math.Clamp(size - offset, 0, destination.Length);
        destination.Span[..n].Fill(0x5A);
        return ValueTask.FromResult(ReadResult.InBuffer(n));
    }

    public Errno OpenDir(ulong node, out ulong handle)
    {
        handle = 0;
        return Errno.Ok;
    }

    public Errno ReadDir(ulong node, ulong handle, long offset, ref DirectoryListing listing)
    {
        if (offset == 0) listing.TryAdd(Name, FileId, FuseConstants.DirentTypeReg, 1, default);
        return Errno.Ok;
    }

    public Errno StatFs(ulong node, out FuseKStatFs stat)
    {
        stat = default;
        stat.BSize = 4096;
        stat.NameLen = 255;
        return Errno.Ok;
    }
}
