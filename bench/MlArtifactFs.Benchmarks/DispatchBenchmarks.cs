using System.Runtime.InteropServices;
using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using MlArtifactFs.Fuse;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Benchmarks;

/// <summary>
/// Request parse and dispatch without a kernel: raw requests as /dev/fuse delivers them, replies
/// written to /dev/null. The point is the Allocated column: a READ, a LOOKUP and a GETATTR must
/// allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class DispatchBenchmarks
{
    private FuseSession _session = null!;
    private int _devNull;
    private byte[] _read = null!, _lookup = null!, _getattr = null!;

    [GlobalSetup]
    public void Setup()
    {
        _session = FuseSession.CreateDetached(new MemoryFileSystem(1L << 30), new FuseMountOptions { MountPoint = "/nonexistent" });
        _devNull = Libc.Open("/dev/null", 1);
        _read = Request(FuseOpcode.Read, MemoryFileSystem.FileId, new FuseReadIn { Fh = 1, Offset = 1 << 20, Size = 128 * 1024 });
        _lookup = RequestWithName(FuseOpcode.Lookup, FuseConstants.RootId, "data.bin"u8);
        _getattr = Request(FuseOpcode.GetAttr, MemoryFileSystem.FileId, new FuseGetAttrIn());
    }

    [GlobalCleanup]
    public void Cleanup() => Libc.Close(_devNull);

    private static byte[] Request<T>(FuseOpcode op, ulong node, T body) where T : unmanaged
    {
        var bytes = new byte[Marshal.SizeOf<FuseInHeader>() + Marshal.SizeOf<T>()];
        var header = new FuseInHeader { Len = (uint)bytes.Length, Opcode = op, Unique = 7, NodeId = node };
        MemoryMarshal.Write(bytes, in header);
        MemoryMarshal.Write(bytes.AsSpan(Marshal.SizeOf<FuseInHeader>()), in body);
        return bytes;
    }

    private static byte[] RequestWithName(FuseOpcode op, ulong node, ReadOnlySpan<byte> name)
    {
        var bytes = new byte[Marshal.SizeOf<FuseInHeader>() + name.Length + 1];
        var header = new FuseInHeader { Len = (uint)bytes.Length, Opcode = op, Unique = 9, NodeId = node };
        MemoryMarshal.Write(bytes, in header);
        name.CopyTo(bytes.AsSpan(Marshal.SizeOf<FuseInHeader>()));
        return bytes;
    }

    [Benchmark] public void Read128KiB() => _session.DispatchDetached(_devNull, _read);
    [Benchmark] public void Lookup() => _session.DispatchDetached(_devNull, _lookup);
    [Benchmark] public void GetAttr() => _session.DispatchDetached(_devNull, _getattr);
}

/// <summary>What verifying a chunk costs (SHA-256; SHA-NI where the CPU has it).</summary>
[MemoryDiagnoser]
public class VerificationBenchmarks
{
    private readonly byte[] _chunk = new byte[4 << 20];
    private readonly byte[] _hash = new byte[32];

    [GlobalSetup]
    public void Setup() => new Random(1).NextBytes(_chunk);

    [Benchmark] public int Sha256Of4MiBChunk() => SHA256.HashData(_chunk, _hash);
}
