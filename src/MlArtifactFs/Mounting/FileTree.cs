using System.Text;
using MlArtifactFs.Cache;
using MlArtifactFs.Manifest;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Mounting;

/// <summary>A file of the tree: what to serve and where its bytes come from.</summary>
public sealed record FileEntry(string Path, long Size, BlobDescriptor Blob, ObjectLocation Location)
{
    /// <summary>Opens this file's blob (pair with <see cref="BlobCache.Release"/>); whole blobs are shared only between openers of the same URL.</summary>
    public CachedBlob OpenBlob(BlobCache cache) => cache.Open(Blob, Location.RequestUri.AbsoluteUri);
}

/// <summary>
/// The directory tree of one manifest, built once and never changed (a version switch builds a
/// new tree). Node ids are <c>FirstId .. FirstId+Count-1</c>, unique within a mount across every tree
/// it has served, so handles and kernel inodes of an old version stay valid after a switch.
/// The FUSE root (id 1) always means the current tree's root.
/// </summary>
public sealed class FileTree
{
    public sealed class Node
    {
        internal Node(ulong id, string name, Node? parent, FileEntry? file)
        {
            Id = id;
            Name = name;
            NameUtf8 = Encoding.UTF8.GetBytes(name);
            Parent = parent;
            File = file;
        }

        public ulong Id { get; }
        public string Name { get; }
        public byte[] NameUtf8 { get; }
        public Node? Parent { get; }
        /// <summary>Null for directories.</summary>
        public FileEntry? File { get; }
        public bool IsDirectory => File is null;

        /// <summary>Children in name order (listing) and by name (lookup); empty for files.</summary>
        public List<Node> Children { get; } = [];
        internal Dictionary<string, Node> ChildrenByName { get; } = new(StringComparer.Ordinal);
    }

    private readonly Node[] _nodes;

    private FileTree(ModelManifest manifest, Node[] nodes, ulong firstId, long totalBytes, int fileCount)
    {
        Manifest = manifest;
        _nodes = nodes;
        FirstId = firstId;
        TotalBytes = totalBytes;
        FileCount = fileCount;
    }

    public ModelManifest Manifest { get; }

    /// <summary>References the kernel holds on this tree's nodes (LOOKUP and READDIRPLUS entries less FORGETs).</summary>
    internal long KernelReferences;
    public Node Root => _nodes[0];
    public ulong FirstId { get; }
    public int Count => _nodes.Length;
    public long TotalBytes { get; }
    public int FileCount { get; }
    public IEnumerable<Node> Files => _nodes.Where(n => !n.IsDirectory);

    public bool Contains(ulong id) => id >= FirstId && id < FirstId + (ulong)_nodes.Length;

    public Node? Find(ulong id) => Contains(id) ? _nodes[id - FirstId] : null;

    public Node? FindPath(string path)
    {
        Node node = Root;
        foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
            if (!node.ChildrenByName.TryGetValue(part, out node!)) return null;
        return node;
    }

    /// <summary>Looks a child up by its UTF-8 name without allocating (names are decoded on the stack).</summary>
    public static Node? FindChild(Node directory, ReadOnlySpan<byte> utf8Name)
    {
        if (utf8Name.Length > 1024) return null;
        Span<char> chars = stackalloc char[utf8Name.Length];
        if (!Encoding.UTF8.TryGetChars(utf8Name, chars, out int count)) return null;
        var lookup = directory.ChildrenByName.GetAlternateLookup<ReadOnlySpan<char>>();
        return lookup.TryGetValue(chars[..count], out var child) ? child : null;
    }

    /// <summary>Builds the tree of a validated manifest; ids start at <paramref name="firstId"/>.</summary>
    public static FileTree Build(ModelManifest manifest, S3Settings s3, ulong firstId)
    {
        var nodes = new List<Node>();
        ulong NextId() => firstId + (ulong)nodes.Count;
        var root = new Node(NextId(), "", null, null);
        nodes.Add(root);
        long chunkSize = manifest.EffectiveChunkSize;
        long total = 0;
        foreach (var f in manifest.Files!.OrderBy(f => f.Path, StringComparer.Ordinal))
        {
            var parts = f.Path!.Split('/');
            Node dir = root;
            for (int i = 0; i < parts.Length - 1; i++)
            {
                if (!dir.ChildrenByName.TryGetValue(parts[i], out var sub))
                {
                    sub = new Node(NextId(), parts[i], dir, null);
                    nodes.Add(sub);
                    dir.ChildrenByName[parts[i]] = sub;
                    dir.Children.Add(sub);
                }
                dir = sub;
            }
            var blob = new BlobDescriptor(f.Sha256!, f.Size!.Value, chunkSize, f.Chunks, manifest.ChunkHashAlgorithm);
            var entry = new FileEntry(f.Path!, f.Size!.Value, blob, ObjectLocation.Resolve(f.Url!, s3));
            var node = new Node(NextId(), parts[^1], dir, entry);
            nodes.Add(node);
            dir.ChildrenByName[parts[^1]] = node;
            dir.Children.Add(node);
            total += f.Size.Value;
        }
        foreach (var n in nodes) n.Children.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return new FileTree(manifest, [.. nodes], firstId, total, manifest.Files!.Count);
    }
}
