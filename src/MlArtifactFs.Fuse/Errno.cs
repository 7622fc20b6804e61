using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Fuse;

/// <summary>
/// A POSIX error number: always positive, <see cref="Ok"/> (0) for success. The one convention of the
/// file system interface (go-fuse's Status); only the session turns it into the kernel's negative
/// reply code, in one place.
/// </summary>
public readonly record struct Errno(int Value)
{
    public static readonly Errno Ok = new(0);
    public static readonly Errno ENOENT = new(Libc.ENOENT);
    public static readonly Errno EINTR = new(Libc.EINTR);
    public static readonly Errno EIO = new(Libc.EIO);
    public static readonly Errno EBADF = new(Libc.EBADF);
    public static readonly Errno ENOTDIR = new(Libc.ENOTDIR);
    public static readonly Errno EISDIR = new(Libc.EISDIR);
    public static readonly Errno EINVAL = new(Libc.EINVAL);
    public static readonly Errno EROFS = new(Libc.EROFS);
    public static readonly Errno ENOSYS = new(Libc.ENOSYS);

    public bool IsOk => Value == 0;

    public override string ToString() => IsOk ? "OK" : $"{Libc.StrError(Value)} (errno {Value})";
}

/// <summary>Memory a READ's reply is written from directly; returned once the reply was written.</summary>
public interface IReadLease
{
    void Return();
}

/// <summary>
/// The answer to one READ, returned by one call (go-fuse's ReadResult): a count of bytes the file
/// system wrote into the buffer it was given, memory of its own to send the bytes from (no copy into
/// the READ's buffer), a range of a file for the session to splice to the kernel (one copy in the
/// kernel, none through user space), or an error.
/// </summary>
public readonly struct ReadResult
{
    /// <summary>Bytes to send (short at the end of the file); 0 with an error.</summary>
    public int Length { get; private init; }
    /// <summary>For <see cref="IsFileRange"/>: the file to send the bytes from (owned by the file system, open for the handle's life).</summary>
    public int Fd { get; private init; }
    public long FileOffset { get; private init; }
    public Errno Error { get; private init; }
    /// <summary>For <see cref="IsMemory"/>: where the bytes are; for both, whom to tell once the reply was sent.</summary>
    public nint Address { get; private init; }
    public IReadLease? Lease { get; private init; }

    public bool IsFileRange => Fd >= 0 && Error.IsOk;
    public bool IsMemory => Address != 0 && Error.IsOk;

    /// <summary><paramref name="length"/> bytes were written at the start of the READ's buffer.</summary>
    public static ReadResult InBuffer(int length) => new() { Length = length, Fd = -1 };

    /// <summary>
    /// The bytes lie complete and verified at <paramref name="offset"/> of <paramref name="fd"/> (and stay so until
    /// <paramref name="lease"/>, if any, is returned, once the reply was sent).
    /// </summary>
    public static ReadResult FileRange(int fd, long offset, int length, IReadLease? lease = null) =>
        new() { Length = length, Fd = fd, FileOffset = offset, Lease = lease };

    /// <summary>The bytes lie at <paramref name="address"/> (memory that stays valid until <paramref name="lease"/> is returned).</summary>
    public static ReadResult InMemory(nint address, int length, IReadLease lease) => new() { Length = length, Fd = -1, Address = address, Lease = lease };

    public static ReadResult Failed(Errno error) => new() { Fd = -1, Error = error };

    public static implicit operator ReadResult(Errno error) => Failed(error);
}
