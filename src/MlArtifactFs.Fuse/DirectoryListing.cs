using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse;

/// <summary>
/// Writes READDIR / READDIRPLUS entries straight into the reply buffer: fuse_dirent (24 bytes) or
/// fuse_direntplus (128 + 24) followed by the name, padded to 8 bytes.
/// </summary>
public ref struct DirectoryListing
{
    private readonly Span<byte> _buffer;
    private int _used;

    internal DirectoryListing(Span<byte> buffer, bool plus)
    {
        _buffer = buffer;
        Plus = plus;
    }

    /// <summary>True for READDIRPLUS: each entry carries its attributes and counts as a LOOKUP for nodes other than "." and "..".</summary>
    public bool Plus { get; }

    internal readonly int Length => _used;

    /// <summary>Adds one entry; false when it does not fit (stop and wait for the next call).</summary>
    /// <param name="cookie">The offset the kernel passes back to continue after this entry.</param>
    public bool TryAdd(scoped ReadOnlySpan<byte> name, ulong ino, uint direntType, long cookie, in FuseEntryOut entry)
    {
        int headerSize = Plus ? Unsafe.SizeOf<FuseEntryOut>() + Unsafe.SizeOf<FuseDirent>() : Unsafe.SizeOf<FuseDirent>();
        int size = (headerSize + name.Length + 7) & ~7;
        if (_used + size > _buffer.Length) return false;
        var slot = _buffer.Slice(_used, size);
        int pos = 0;
        if (Plus)
        {
            MemoryMarshal.Write(slot, in entry);
            pos = Unsafe.SizeOf<FuseEntryOut>();
        }
        var dirent = new FuseDirent { Ino = ino, Off = (ulong)cookie, NameLen = (uint)name.Length, Type = direntType };
        MemoryMarshal.Write(slot[pos..], in dirent);
        pos += Unsafe.SizeOf<FuseDirent>();
        name.CopyTo(slot[pos..]);
        slot[(pos + name.Length)..].Clear();
        _used += size;
        return true;
    }
}
