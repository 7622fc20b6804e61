using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;
using MlArtifactFs.Cache;
using MlArtifactFs.Fuse.Interop;

namespace MlArtifactFs.Manifest;

/// <summary>Options of <see cref="ManifestGenerator"/>; mirrors `mlfs generate`.</summary>
public sealed record GenerateOptions(
    string ArtifactId,
    string Version,
    string UrlPrefix,
    IReadOnlyList<string> Prefetch,
    long ChunkSize = ManifestGenerator.DefaultChunkSize,
    string? MountPath = null,
    ChunkHashAlgorithm ChunkHash = ChunkHashAlgorithm.Blake3);

/// <summary>
/// Walks a model folder and builds its manifest: every regular file (symlinks to files inside the
/// folder are followed), sorted by path, with the SHA-256 of the file and the hash of each chunk
/// (BLAKE3 by default: about two thirds of SHA-256's cost for every reader; SHA-256 on request) computed in one
/// pass over the data. Anything that cannot be served faithfully (a link leaving the folder, a
/// socket, a device) is an error naming it, never silently skipped.
/// </summary>
public static class ManifestGenerator
{
    /// <summary>
    /// 1 MiB chunks: a cold read waits for its whole chunk to arrive and verify, and through S3's round
    /// trips (30 ms, ~80 MB/s per connection) 4 MiB took 1.9 x one small GET to a first byte where 1 MiB,
    /// fetched in two parts, takes about one GET (bench/network.py). The cost is the manifest: 10 GB of
    /// model is 10,000 hashes (~700 KB of JSON); with BLAKE3 the hashing per chunk is no extra cost, and
    /// fetch requests still cover 16 chunks, so throughput does not depend on it.
    /// </summary>
    public const long DefaultChunkSize = 1L << 20;

    /// <summary>Read size: large enough for disk-speed sequential reads, small enough to stay in L2/L3-friendly pools.</summary>
    private const int ReadBlock = 4 << 20;

    /// <summary>Files hashed at once: enough to keep every core busy on folders of small files, few enough to bound memory.</summary>
    private const int Batch = 64;

    /// <summary>The whole manifest in memory (push, tests), validated as a loaded manifest is.</summary>
    public static async Task<ModelManifest> GenerateAsync(string directory, GenerateOptions options,
        IProgress<(string Path, long Bytes)>? progress = null, CancellationToken cancel = default)
    {
        var files = new List<ManifestFile>();
        await foreach (var file in HashInOrderAsync(directory, options, progress, cancel).ConfigureAwait(false)) files.Add(file);
        var manifest = new ModelManifest
        {
            ArtifactId = options.ArtifactId,
            Version = options.Version,
            MountPath = options.MountPath,
            ChunkSize = options.ChunkSize,
            // Absent means SHA-256: manifests with SHA-256 chunk hashes stay exactly as every earlier mlfs wrote them.
            ChunkHash = options.ChunkHash == ChunkHashAlgorithm.Sha256 ? null : ChunkHashing.Name(options.ChunkHash),
            Prefetch = [.. options.Prefetch],
            Files = files,
        };
        // Everything we write must load: the same validation users get.
        return ManifestLoader.Check(manifest, "generated manifest");
    }

    /// <summary>
    /// Streams the manifest to <paramref name="output"/> as files are hashed, in path order, byte for byte what
    /// <see cref="ManifestLoader.Serialize"/> writes for <see cref="GenerateAsync"/>'s manifest (plus a newline):
    /// a folder of 100,000 files is never held as one document or one string. <paramref name="seedFormat"/>
    /// leaves out chunk_size, chunk_hash and chunks. Returns the number of files and their total size.
    /// </summary>
    public static async Task<(int Files, long Bytes)> WriteAsync(string directory, GenerateOptions options, Stream output, bool seedFormat = false,
        IProgress<(string Path, long Bytes)>? progress = null, CancellationToken cancel = default)
    {
        int count = 0;
        long total = 0;
        await using (var json = new Utf8JsonWriter(output, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("artifact_id", options.ArtifactId);
            json.WriteString("version", options.Version);
            if (options.MountPath is not null) json.WriteString("mount_path", options.MountPath);
            if (!seedFormat)
            {
                json.WriteNumber("chunk_size", options.ChunkSize);
                if (options.ChunkHash != ChunkHashAlgorithm.Sha256) json.WriteString("chunk_hash", ChunkHashing.Name(options.ChunkHash));
            }
            json.WriteStartArray("prefetch");
            foreach (var p in options.Prefetch) json.WriteStringValue(p);
            json.WriteEndArray();
            json.WriteStartArray("files");
            await foreach (var f in HashInOrderAsync(directory, options, progress, cancel).ConfigureAwait(false))
            {
                json.WriteStartObject();
                json.WriteString("path", f.Path);
                json.WriteString("url", f.Url);
                json.WriteNumber("size", f.Size!.Value);
                json.WriteString("sha256", f.Sha256);
                json.WriteString("compression", f.Compression);
                if (!seedFormat)
                {
                    json.WritePropertyName("chunks");
                    ChunkDigestsJsonConverter.WriteDigests(json, f.Chunks!);
                }
                json.WriteEndObject();
                count++;
                total += f.Size.Value;
                if (json.BytesPending > 1 << 20) await json.FlushAsync(cancel).ConfigureAwait(false);
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        await output.WriteAsync("\n"u8.ToArray(), cancel).ConfigureAwait(false);
        await output.FlushAsync(cancel).ConfigureAwait(false);
        return (count, total);
    }

    /// <summary>
    /// Every file of the folder, checked (its path as the loader checks it) and hashed, in path order: a batch
    /// at a time, the files of a batch on every core at once.
    /// </summary>
    private static async IAsyncEnumerable<ManifestFile> HashInOrderAsync(string directory, GenerateOptions options,
        IProgress<(string Path, long Bytes)>? progress, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancel)
    {
        if (options.ChunkSize <= 0 || options.ChunkSize > ManifestLoader.MaxChunkSize)
            throw new ArgumentException($"--chunk-size must be between 1 and {ManifestLoader.MaxChunkSize}, got {options.ChunkSize}");
        string root = Path.GetFullPath(directory).TrimEnd('/');
        if (!Directory.Exists(root)) throw new DirectoryNotFoundException($"model folder not found: {directory}");
        string urlPrefix = options.UrlPrefix.TrimEnd('/') + "/";
        if (ManifestLoader.CheckUrl(urlPrefix + "x") is { } urlProblem) throw new ArgumentException($"--url-prefix: {urlProblem}");

        var entries = new List<(string Relative, string Physical)>();
        Walk(root, root, "", entries);
        entries.Sort((a, b) => string.CompareOrdinal(a.Relative, b.Relative));
        foreach (var (relative, _) in entries)
            if (ManifestLoader.CheckPath(relative) is { } pathProblem)
                throw new ManifestException("generated manifest", [$"{relative}: path {pathProblem}"]);
        var known = new HashSet<string>(entries.Select(e => e.Relative), StringComparer.Ordinal);
        foreach (var p in options.Prefetch)
            if (!known.Contains(p)) throw new ArgumentException($"--prefetch names \"{p}\", which is not a file in {directory}");

        var batch = new ManifestFile[Batch];
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount, CancellationToken = cancel };
        for (int first = 0; first < entries.Count; first += Batch)
        {
            int n = Math.Min(Batch, entries.Count - first);
            await Parallel.ForAsync(0, n, parallel, async (i, ct) =>
            {
                var (relative, physical) = entries[first + i];
                var (size, sha, chunks) = await HashFileAsync(physical, options.ChunkSize, options.ChunkHash,
                    progress is null ? null : bytes => progress.Report((relative, bytes)), ct).ConfigureAwait(false);
                batch[i] = new ManifestFile
                {
                    Path = relative,
                    Url = urlPrefix + EncodePath(relative),
                    Size = size,
                    Sha256 = sha,
                    Compression = "none",
                    Chunks = chunks,
                };
            }).ConfigureAwait(false);
            for (int i = 0; i < n; i++)
            {
                yield return batch[i];
                batch[i] = null!;
            }
        }
    }

    /// <summary>Percent-encodes each segment (spaces, UTF-8, '#', '?') but keeps the '/' separators.</summary>
    public static string EncodePath(string relative) =>
        string.Join('/', relative.Split('/').Select(Uri.EscapeDataString));

    private static void Walk(string root, string directory, string prefix, List<(string, string)> output)
    {
        foreach (var info in new DirectoryInfo(directory).EnumerateFileSystemInfos())
        {
            string relative = prefix + info.Name;
            string physical = info.FullName;
            if (Libc.LStat(physical, out var lst) != 0)
                throw new IOException($"cannot stat {relative}: {Libc.StrError(Libc.LastErrno)}");

            if ((lst.Mode & Libc.S_IFMT) == Libc.S_IFLNK)
            {
                string? target = info.ResolveLinkTarget(returnFinalTarget: true)?.FullName;
                if (target is null || Libc.Stat(target, out var tst) != 0)
                    throw new IOException($"{relative}: symbolic link is broken");
                if (!IsInside(root, target))
                    throw new IOException($"{relative}: symbolic link points outside the model folder ({target})");
                if (!tst.IsRegularFile)
                    throw new IOException($"{relative}: symbolic link points to {Kind(tst.Mode)}; only links to files are followed");
                output.Add((relative, target));
            }
            else if (lst.IsDirectory) Walk(root, physical, relative + "/", output);
            else if (lst.IsRegularFile) output.Add((relative, physical));
            else throw new IOException($"{relative}: is {Kind(lst.Mode)}, which a model folder cannot contain");
        }
    }

    private static bool IsInside(string root, string path)
    {
        string real = Path.GetFullPath(path);
        return real.StartsWith(root + "/", StringComparison.Ordinal);
    }

    private static string Kind(uint mode) => (mode & Libc.S_IFMT) switch
    {
        0xC000 => "a socket",
        0x2000 => "a character device",
        0x6000 => "a block device",
        0x1000 => "a FIFO",
        Libc.S_IFDIR => "a directory",
        _ => "a special file",
    };

    /// <summary>
    /// One pass over the file: each block feeds the whole-file hash and the current chunk's hash. For
    /// large blocks the two hashes run on two cores at once (Parallel.Invoke), so hashing twice costs no
    /// more time than hashing once; small ones are not worth the hand-off. A file that changes size while
    /// it is read is an error (its hashes would describe no version of it).
    /// </summary>
    public static async Task<(long Size, string Sha256, ChunkDigests Chunks)> HashFileAsync(
        string path, long chunkSize, ChunkHashAlgorithm algorithm, Action<long>? onBytes, CancellationToken cancel)
    {
        await using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.Open, Access = FileAccess.Read, Share = FileShare.Read,
            BufferSize = 0, Options = FileOptions.SequentialScan,
        });
        long expected = stream.Length;
        using var fileHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var chunkHash = new ChunkDigest(algorithm);
        var digests = new byte[(expected + chunkSize - 1) / chunkSize * ChunkHashing.DigestSize];
        int chunk = 0;
        IOException Changed() => new($"{path} changed while it was hashed (it was {expected} bytes); hash a folder nothing writes to");
        int blockSize = (int)Math.Clamp(expected + 1, 1, ReadBlock); // +1: the read that finds the end
        // Double buffering: the next block is read while the current one is hashed.
        byte[] current = ArrayPool<byte>.Shared.Rent(blockSize), next = ArrayPool<byte>.Shared.Rent(blockSize);
        try
        {
            long total = 0, inChunk = 0;
            int n = await stream.ReadAsync(current.AsMemory(0, blockSize), cancel).ConfigureAwait(false);
            while (n > 0)
            {
                if (total + n > expected) throw Changed(); // before the next read starts: no read may outlive the buffers
                var reading = stream.ReadAsync(next.AsMemory(0, blockSize), cancel);
                var block = current;
                int length = n;
                void HashChunks()
                {
                    int offset = 0;
                    while (offset < length)
                    {
                        int take = (int)Math.Min(length - offset, chunkSize - inChunk);
                        chunkHash.Append(block.AsSpan(offset, take));
                        offset += take;
                        inChunk += take;
                        if (inChunk == chunkSize)
                        {
                            chunkHash.FinishInto(digests.AsSpan(chunk++ * ChunkHashing.DigestSize, ChunkHashing.DigestSize));
                            inChunk = 0;
                        }
                    }
                }
                if (length < SmallBlock)
                {
                    fileHash.AppendData(block, 0, length);
                    HashChunks();
                }
                else Parallel.Invoke(() => fileHash.AppendData(block, 0, length), HashChunks);
                total += length;
                onBytes?.Invoke(total);
                n = await reading.ConfigureAwait(false);
                (current, next) = (next, current);
            }
            if (inChunk > 0) chunkHash.FinishInto(digests.AsSpan(chunk++ * ChunkHashing.DigestSize, ChunkHashing.DigestSize));
            if (total != expected) throw Changed();
            return (total, Convert.ToHexStringLower(fileHash.GetHashAndReset()), new ChunkDigests(digests));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(current);
            ArrayPool<byte>.Shared.Return(next);
        }
    }

    /// <summary>Below this a block is hashed on one core: handing half of it to another costs more than it saves.</summary>
    private const int SmallBlock = 256 << 10;

    /// <summary>A chunk's hash built from the pieces of the blocks read (SHA-256 or BLAKE3).</summary>
    private sealed class ChunkDigest(ChunkHashAlgorithm algorithm) : IDisposable
    {
        private readonly IncrementalHash? _sha256 = algorithm == ChunkHashAlgorithm.Sha256 ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        private readonly Blake3.Hasher? _blake3 = algorithm == ChunkHashAlgorithm.Blake3 ? Blake3.Hasher.New() : null;

        public void Append(ReadOnlySpan<byte> piece)
        {
            if (_sha256 is not null) _sha256.AppendData(piece);
            else _blake3!.Update(piece);
        }

        public void FinishInto(Span<byte> digest)
        {
            if (_sha256 is not null) _sha256.GetHashAndReset(digest);
            else
            {
                _blake3!.Finalize().AsSpan().CopyTo(digest);
                _blake3.Reset();
            }
        }

        public void Dispose()
        {
            _sha256?.Dispose();
            _blake3?.Dispose();
        }
    }
}
