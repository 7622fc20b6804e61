using System.Collections.Concurrent;
using System.Text;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>
/// A read-only tree held in memory, for testing the FUSE layer on real mounts without S3: files
/// with literal bytes, computed content of any size (TestContent), and "slow" files whose reads
/// wait until released or cancelled.
/// </summary>
public sealed class InMemoryFileSystem : IFuseFileSystem
{
    public sealed class Node
    {
        public ulong Id;
        public string Name = "";
        public Node? Parent;
        public bool IsDirectory;
        public long Size;
        public byte[]? Bytes;
        public ulong? Seed;
        public bool Slow;
        public List<Node> Children = [];
        public Dictionary<string, Node> ByName = new(StringComparer.Ordinal);
    }

    private readonly ConcurrentDictionary<ulong, Node> _nodes = new();
    private ulong _nextId = FuseConstants.RootId;

    public InMemoryFileSystem()
    {
        Root = new Node { Id = _nextId++, IsDirectory = true };
        _nodes[Root.Id] = Root;
    }

    public Node Root { get; }

    /// <summary>Completed by the test to let slow reads finish.</summary>
    public TaskCompletionSource SlowGate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    /// <summary>Set when a slow read starts waiting.</summary>
    public TaskCompletionSource SlowReadStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    /// <summary>Set when a slow read's token is cancelled (INTERRUPT or unmount).</summary>
    public TaskCompletionSource SlowReadCancelled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public FuseSession? Session { get; private set; }
    public bool PassthroughOffered { get; private set; }

    public Node AddDirectory(string path) => Ensure(path.Split('/', StringSplitOptions.RemoveEmptyEntries));

    public Node AddFile(string path, byte[] bytes) => Add(path, n => { n.Bytes = bytes; n.Size = bytes.Length; });
    public Node AddComputedFile(string path, long size, ulong seed) => Add(path, n => { n.Seed = seed; n.Size = size; });
    public Node AddSlowFile(string path, long size) => Add(path, n => { n.Slow = true; n.Seed = 1; n.Size = size; });

    private Node Add(string path, Action<Node> init)
    {
        var parts = path.Split('/');
        var dir = Ensure(parts[..^1]);
        var node = new Node { Id = _nextId++, Name = parts[^1], Parent = dir };
        init(node);
        dir.Children.Add(node);
        dir.ByName[node.Name] = node;
        _nodes[node.Id] = node;
        return node;
    }

    private Node Ensure(string[] parts)
    {
        var dir = Root;
        foreach (var part in parts)
        {
            if (!dir.ByName.TryGetValue(part, out var sub))
            {
                sub = new Node { Id = _nextId++, Name = part, Parent = dir, IsDirectory = true };
                dir.Children.Add(sub);
                dir.ByName[part] = sub;
                _nodes[sub.Id] = sub;
            }
            dir = sub;
        }
        return dir;
    }

    public void Initialized(FuseSession session, FuseConnectionInfo info)
    {
        Session = session;
        PassthroughOffered = info.PassthroughEnabled;
    }

    private static void Fill(Node n, out FuseAttr attr)
    {
        attr = default;
        attr.Ino = n.Id;
        attr.Mode = n.IsDirectory ? Libc.S_IFDIR | 0x16D : Libc.S_IFREG | 0x124;
        attr.NLink = n.IsDirectory ? 2u : 1u;
        attr.Size = n.IsDirectory ? 4096 : (ulong)n.Size;
        attr.Blocks = (attr.Size + 511) / 512;
        attr.BlkSize = 4096;
    }

    private static void Fill(Node n, out FuseEntryOut entry)
    {
        entry = default;
        entry.NodeId = n.Id;
        entry.EntryValid = entry.AttrValid = 60;
        Fill(n, out entry.Attr);
    }

    public Errno Lookup(ulong parent, ReadOnlySpan<byte> name, out FuseEntryOut entry)
    {
        entry = default;
        if (!_nodes.TryGetValue(parent, out var dir) || !dir.IsDirectory) return Errno.ENOENT;
        if (!dir.ByName.TryGetValue(Encoding.UTF8.GetString(name), out var child)) return Errno.ENOENT;
        Fill(child, out entry);
        return Errno.Ok;
    }

    public Errno GetAttr(ulong node, out FuseAttr attr)
    {
        attr = default;
        if (!_nodes.TryGetValue(node, out var n)) return Errno.ENOENT;
        Fill(n, out attr);
        return Errno.Ok;
    }

    public Errno Open(ulong node, int flags, out FuseOpenResult result)
    {
        result = new FuseOpenResult { Handle = node, KeepCache = false };
        if (!_nodes.TryGetValue(node, out var n)) return Errno.ENOENT;
        result.DirectIo = n.Slow; // synchronous READs: a signal to the reader interrupts them
        return n.IsDirectory ? Errno.EISDIR : Errno.Ok;
    }

    public ValueTask<ReadResult> ReadAsync(ulong node, ulong handle, long offset, Memory<byte> destination, CancellationToken cancel)
    {
        if (!_nodes.TryGetValue(node, out var n)) return ValueTask.FromResult<ReadResult>(Errno.ENOENT);
        if (offset >= n.Size) return ValueTask.FromResult(ReadResult.InBuffer(0));
        int length = (int)Math.Min(destination.Length, n.Size - offset);
        if (n.Slow) return SlowAsync(this, cancel);
        if (n.Bytes is { } bytes) bytes.AsSpan((int)offset, length).CopyTo(destination.Span);
        else TestContent.Fill(n.Seed!.Value, offset, destination.Span[..length]);
        return ValueTask.FromResult(ReadResult.InBuffer(length));

        static async ValueTask<ReadResult> SlowAsync(InMemoryFileSystem fs, CancellationToken cancel)
        {
            fs.SlowReadStarted.TrySetResult();
            try
            {
                await fs.SlowGate.Task.WaitAsync(cancel).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                fs.SlowReadCancelled.TrySetResult();
                throw;
            }
            return ReadResult.InBuffer(0);
        }
    }

    public Errno OpenDir(ulong node, out ulong handle)
    {
        handle = 0;
        return _nodes.TryGetValue(node, out var n) && n.IsDirectory ? Errno.Ok : Errno.ENOTDIR;
    }

    public Errno ReadDir(ulong node, ulong handle, long offset, ref DirectoryListing listing)
    {
        if (!_nodes.TryGetValue(node, out var dir)) return Errno.ENOENT;
        for (long i = offset; i < dir.Children.Count; i++)
        {
            var child = dir.Children[(int)i];
            FuseEntryOut entry = default;
            if (listing.Plus) Fill(child, out entry);
            if (!listing.TryAdd(Encoding.UTF8.GetBytes(child.Name), child.Id,
                    child.IsDirectory ? FuseConstants.DirentTypeDir : FuseConstants.DirentTypeReg, i + 1, in entry))
                break;
        }
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
