using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MlArtifactFs.Fuse;

/// <summary>
/// Reads typed values from a request body without throwing: input from the kernel that is too
/// short makes TryRead return false, and the request gets EINVAL.
/// </summary>
internal ref struct RequestReader(ReadOnlySpan<byte> body)
{
    private ReadOnlySpan<byte> _rest = body;

    public readonly ReadOnlySpan<byte> Remaining => _rest;

    public bool TryRead<T>(out T value) where T : unmanaged
    {
        int size = Unsafe.SizeOf<T>();
        if (_rest.Length < size)
        {
            value = default;
            return false;
        }
        value = MemoryMarshal.Read<T>(_rest);
        _rest = _rest[size..];
        return true;
    }

    /// <summary>A NUL-terminated name; false when the terminator is missing.</summary>
    public bool TryReadName(out ReadOnlySpan<byte> name)
    {
        int nul = _rest.IndexOf((byte)0);
        if (nul < 0)
        {
            name = default;
            return false;
        }
        name = _rest[..nul];
        _rest = _rest[(nul + 1)..];
        return true;
    }
}
