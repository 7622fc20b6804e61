using System.Runtime.InteropServices;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>
/// The session against kernels of other protocol versions and against malformed input, through its
/// dispatch (no mount): synthetic requests in, replies read back from a socket pair.
/// </summary>
public sealed unsafe class ProtocolVersionTests : IDisposable
{
    private const int SOCK_SEQPACKET = 5, AF_UNIX = 1;
    private readonly int _replyFd, _readFd;
    private readonly InMemoryFileSystem _fs = new();
    private readonly byte[] _content = TestContent.Range(7, 0, 300_000);

    public ProtocolVersionTests()
    {
        int* fds = stackalloc int[2];
        Assert.Equal(0, Libc.SocketPair(AF_UNIX, SOCK_SEQPACKET | Libc.O_CLOEXEC, 0, fds));
        (_replyFd, _readFd) = (fds[0], fds[1]);
        Libc.Fcntl(_readFd, 4 /* F_SETFL */, 0x800 /* O_NONBLOCK */); // replies of these requests are written before dispatch returns
        _fs.AddFile("weights.bin", _content);
    }

    public void Dispose()
    {
        Libc.Close(_replyFd);
        Libc.Close(_readFd);
    }

    private FuseSession NewSession() => FuseSession.CreateDetached(_fs, new FuseMountOptions { MountPoint = "/nonexistent" });

    private static byte[] Request(FuseOpcode op, ulong unique, ulong node, ReadOnlySpan<byte> body)
    {
        int headerSize = Marshal.SizeOf<FuseInHeader>();
        var bytes = new byte[headerSize + body.Length];
        var header = new FuseInHeader { Len = (uint)bytes.Length, Opcode = op, Unique = unique, NodeId = node };
        MemoryMarshal.Write(bytes, in header);
        body.CopyTo(bytes.AsSpan(headerSize));
        return bytes;
    }

    private static byte[] Bytes<T>(T value) where T : unmanaged => MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value)).ToArray();

    /// <summary>The INIT body a kernel of this minor sends: 16 bytes before 7.36, 64 from then on.</summary>
    private static byte[] InitBody(uint minor, ulong offered)
    {
        var init = new FuseInitIn { Major = 7, Minor = minor, MaxReadahead = 128 << 10, Flags = (uint)offered, Flags2 = (uint)(offered >> 32) };
        var full = Bytes(init);
        return minor < 36 ? full[..FuseInitIn.CompatSize] : full;
    }

    private (FuseOutHeader Header, byte[] Body) ReadReply()
    {
        var buffer = new byte[1 << 20];
        nint n;
        fixed (byte* p = buffer) n = Libc.Read(_readFd, p, buffer.Length);
        Assert.True(n >= Marshal.SizeOf<FuseOutHeader>(), $"a reply ({n} bytes)");
        var header = MemoryMarshal.Read<FuseOutHeader>(buffer);
        Assert.Equal(n, (nint)header.Len);
        return (header, buffer[Marshal.SizeOf<FuseOutHeader>()..(int)n]);
    }

    private bool ReplyPending()
    {
        var buffer = new byte[4096];
        fixed (byte* p = buffer) return Libc.Read(_readFd, p, buffer.Length) > 0;
    }

    [Theory]
    [InlineData(31u)] // Linux 5.4
    [InlineData(34u)] // 5.10
    [InlineData(36u)] // 5.17: flags2 arrives
    [InlineData(38u)] // 6.1, Debian 12
    [InlineData(40u)] // 6.9: passthrough
    [InlineData(45u)] // 6.18
    public void InitIsParsedByTheKernelsMinorAndLookupAndReadWorkAfterIt(uint minor)
    {
        var session = NewSession();
        // What such a kernel offers: the flags of its time (INIT_EXT and flags2 from 7.36, passthrough from 7.40).
        ulong offered = (ulong)(FuseInitFlags.AsyncRead | FuseInitFlags.BigWrites | FuseInitFlags.MaxPages | FuseInitFlags.DoReaddirplus
                                | FuseInitFlags.ReaddirplusAuto | FuseInitFlags.ParallelDirops | FuseInitFlags.AsyncDio);
        if (minor >= 36) offered |= (ulong)FuseInitFlags.InitExt;
        if (minor >= 40) offered |= (ulong)FuseInitFlags.Passthrough;
        session.DispatchDetached(_replyFd, Request(FuseOpcode.Init, 1, 0, InitBody(minor, offered)));
        var (header, body) = ReadReply();
        Assert.Equal(0, header.Error);
        var reply = MemoryMarshal.Read<FuseInitOut>(body);
        Assert.Equal(7u, reply.Major);
        ulong agreed = reply.Flags | (ulong)reply.Flags2 << 32;
        Assert.Equal(0UL, agreed & ~offered); // nothing the kernel did not offer
        Assert.True((agreed & (ulong)FuseInitFlags.MaxPages) != 0);
        Assert.Equal(256, reply.MaxPages);
        if (minor < 36) Assert.Equal(0u, reply.Flags2);
        bool passthrough = minor >= 40 && Libc.GetUid() == 0;
        Assert.Equal(passthrough, (agreed & (ulong)FuseInitFlags.Passthrough) != 0);
        Assert.Equal(passthrough, session.PassthroughEnabled);
        Assert.Equal(passthrough ? 1u : 0u, reply.MaxStackDepth);

        // The session works in that dialect: LOOKUP, OPEN, READ.
        session.DispatchDetached(_replyFd, Request(FuseOpcode.Lookup, 2, FuseConstants.RootId, "weights.bin\0"u8));
        var (lookupHeader, lookupBody) = ReadReply();
        Assert.Equal(0, lookupHeader.Error);
        var entry = MemoryMarshal.Read<FuseEntryOut>(lookupBody);
        Assert.Equal((ulong)_content.Length, entry.Attr.Size);
        session.DispatchDetached(_replyFd, Request(FuseOpcode.Open, 3, entry.NodeId, Bytes(new FuseOpenIn())));
        var (openHeader, openBody) = ReadReply();
        Assert.Equal(0, openHeader.Error);
        var open = MemoryMarshal.Read<FuseOpenOut>(openBody);
        session.DispatchDetached(_replyFd, Request(FuseOpcode.Read, 4, entry.NodeId, Bytes(new FuseReadIn { Fh = open.Fh, Offset = 4096, Size = 128 << 10 })));
        var (readHeader, data) = ReadReply();
        Assert.Equal(0, readHeader.Error);
        Assert.Equal(_content.AsSpan(4096, 128 << 10).ToArray(), data);
    }

    [Fact]
    public void AnInitTooShortForAnyVersionIsRefusedWithEinval()
    {
        var session = NewSession();
        session.DispatchDetached(_replyFd, Request(FuseOpcode.Init, 1, 0, new byte[12]));
        Assert.Equal(-Libc.EINVAL, ReadReply().Header.Error);
    }

    [Fact]
    public void MalformedHeadersAreDroppedOrAnsweredNeverThrown()
    {
        var session = NewSession();
        session.DispatchDetached(_replyFd, new byte[20]); // shorter than a header: dropped
        Assert.False(ReplyPending());

        var lying = Request(FuseOpcode.GetAttr, 5, FuseConstants.RootId, new byte[16]);
        MemoryMarshal.Write(lying, new FuseInHeader { Len = 10, Opcode = FuseOpcode.GetAttr, Unique = 5, NodeId = FuseConstants.RootId });
        session.DispatchDetached(_replyFd, lying); // a length below the header's own size: dropped
        Assert.False(ReplyPending());

        var mismatched = Request(FuseOpcode.GetAttr, 6, FuseConstants.RootId, new byte[16]);
        MemoryMarshal.Write(mismatched, new FuseInHeader { Len = (uint)mismatched.Length + 8, Opcode = FuseOpcode.GetAttr, Unique = 6, NodeId = FuseConstants.RootId });
        session.DispatchDetached(_replyFd, mismatched); // says more than was read: answered EINVAL
        var (header, _) = ReadReply();
        Assert.Equal(6UL, header.Unique);
        Assert.Equal(-Libc.EINVAL, header.Error);
    }
}

public sealed class PendingReadTokenTests
{
    /// <summary>A late INTERRUPT (after its READ finished) must not cancel the pooled token now serving another READ.</summary>
    [Fact]
    public void AnInterruptAfterTheReadFinishedCancelsNothing()
    {
        using var source = new CancellationTokenSource();
        var entry = new PendingReadToken(source);
        entry.Finish();           // the READ completed; its token goes back to the pool...
        entry.Cancel();           // ...and the INTERRUPT that raced with it arrives
        Assert.False(source.IsCancellationRequested);

        using var live = new CancellationTokenSource();
        new PendingReadToken(live).Cancel(); // while pending, INTERRUPT does cancel
        Assert.True(live.IsCancellationRequested);
    }
}
