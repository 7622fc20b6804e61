using System.Text;
using MlArtifactFs.Cache;
using MlArtifactFs.Manifest;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Mounting;

/// <summary>A file of the tree: what to serve and where its bytes come from.</summary>
public sealed class FileEntry
{
    private readonly string? _url;       // null when the URL is _urlPrefix + Path
    private readonly string? _urlPrefix; // one string shared by every file under the same prefix
    private readonly S3Settings _s3;
    private ObjectLocation? _location;

    /// <param name="urlPrefix">When the file's URL is this prefix followed by its path (what generate and push write),
    /// the tree keeps the shared prefix instead of 100,000 URL strings.</param>
    public FileEntry(string path, long size, BlobDescriptor blob, string url, S3Settings s3, string? urlPrefix = null)
    {
        Path = path;
        Size = size;
        Blob = blob;
        _s3 = s3;
        if (urlPrefix is not null && url.Length == urlPrefix.Length + path.Length && url.StartsWith(urlPrefix, StringComparison.Ordinal)
            && url.EndsWith(path, StringComparison.Ordinal))
            _urlPrefix = urlPrefix;
        else _url = url;
    }

    public string Path { get; }
    public long Size { get; }
    public BlobDescriptor Blob { get; }
    public string Url => _url ?? _urlPrefix + Path;

    /// <summary>Resolved on first use: a tree of 100,000 files is built without parsing 100,000 URLs a second time.</summary>
    public ObjectLocation Location => _location ??= ObjectLocation.Resolve(Url, _s3);

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
            Parent = parent;
            File = file;
        }

        public ulong Id { get; }
        public string Name { get; }
        public Node? Parent { get; }
        /// <summary>Null for directories.</summary>
        public FileEntry? File { get; }
        public bool IsDirectory => File is null;

        /// <summary>Children in name order (listing); empty for files.</summary>
        public IReadOnlyList<Node> Children => (IReadOnlyList<Node>?)_children ?? [];

        // Directories only: a tree of 100,000 files should not carry 200,000 empty collections.
        private List<Node>? _children;
        private Dictionary<string, Node>? _childrenByName;

        internal bool TryGetChild(string name, out Node child) => TryGetChild(name.AsSpan(), out child);

        internal bool TryGetChild(ReadOnlySpan<char> name, out Node child)
        {
            child = null!;
            return _childrenByName is not null && _childrenByName.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(name, out child!);
        }

        internal void AddChild(Node child)
        {
            (_childrenByName ??= new(StringComparer.Ordinal))[child.Name] = child;
            (_children ??= []).Add(child);
        }

        /// <summary>Name order for listings; a manifest written in path order (generate, push) is already in it, and is only checked.</summary>
        internal void SortChildren()
        {
            if (_children is not { Count: > 1 } children) return;
            for (int i = 1; i < children.Count; i++)
                if (string.CompareOrdinal(children[i - 1].Name, children[i].Name) > 0)
                {
                    children.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
                    return;
                }
        }
    }

    private readonly Node[] _nodes;

    private FileTree(ModelManifest manifest, Node[] nodes, ulong firstId, long totalBytes, int fileCount)
    {
        // Only the names are kept: the manifest's per-file objects go once the tree has what it needs of them.
        ArtifactId = manifest.ArtifactId!;
        Version = manifest.Version!;
        _nodes = nodes;
        FirstId = firstId;
        TotalBytes = totalBytes;
        FileCount = fileCount;
    }

    /// <summary>References the kernel holds on this tree's nodes (LOOKUP and READDIRPLUS entries less FORGETs).</summary>
    internal long KernelReferences;
    public Node Root => _nodes[0];
    /// <summary>The manifest's names (all this tree keeps of the manifest itself).</summary>
    public string ArtifactId { get; }
    public string Version { get; }
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
            if (!node.TryGetChild(part, out node)) return null;
        return node;
    }

    /// <summary>Looks a child up by its UTF-8 name without allocating (names are decoded on the stack).</summary>
    public static Node? FindChild(Node directory, ReadOnlySpan<byte> utf8Name)
    {
        if (utf8Name.Length > 1024) return null;
        Span<char> chars = stackalloc char[utf8Name.Length];
        if (!Encoding.UTF8.TryGetChars(utf8Name, chars, out int count)) return null;
        return directory.TryGetChild(chars[..count], out var child) ? child : null;
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
        string? urlPrefix = null;
        foreach (var f in manifest.Files!) // in the manifest's order: children are put in name order below, per directory
        {
            string path = f.Path!;
            if (urlPrefix is null && f.Url!.EndsWith(path, StringComparison.Ordinal)) urlPrefix = f.Url[..^path.Length];
            Node dir = root;
            int start = 0;
            for (int slash = path.IndexOf('/'); slash >= 0; start = slash + 1, slash = path.IndexOf('/', start))
            {
                var segment = path.AsSpan(start, slash - start);
                if (!dir.TryGetChild(segment, out var sub))
                {
                    sub = new Node(NextId(), segment.ToString(), dir, null);
                    nodes.Add(sub);
                    dir.AddChild(sub);
                }
                dir = sub;
            }
            var blob = new BlobDescriptor(f.Sha256!, f.Size!.Value, chunkSize, f.Chunks, manifest.ChunkHashAlgorithm);
            var entry = new FileEntry(path, f.Size!.Value, blob, f.Url!, s3, urlPrefix);
            var node = new Node(NextId(), start == 0 ? path : path[start..], dir, entry);
            nodes.Add(node);
            dir.AddChild(node);
            total += f.Size.Value;
        }
        foreach (var n in nodes) n.SortChildren();
        return new FileTree(manifest, [.. nodes], firstId, total, manifest.Files!.Count);
    }
}
