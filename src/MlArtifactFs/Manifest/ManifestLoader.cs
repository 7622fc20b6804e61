using System.Text;
using System.Text.Json;

namespace MlArtifactFs.Manifest;

/// <summary>
/// Reads and validates manifests. Three passes, so every message can name its entry:
/// (1) JSON syntax, reported with line and position; (2) the shape, field by field, before
/// binding, so a wrong type names the file entry rather than a JSON path; (3) the rules that
/// need the whole manifest (paths, chunk lists, prefetch, duplicates). All problems found are
/// reported together, one line each.
/// </summary>
public static class ManifestLoader
{
    /// <summary>Longest path segment the kernel accepts (NAME_MAX).</summary>
    private const int MaxSegmentBytes = 255;

    /// <summary>Longest path the kernel resolves (PATH_MAX, less the mount point's own share).</summary>
    private const int MaxPathBytes = 3072;

    /// <summary>
    /// Largest chunk we accept: every chunk is held whole in memory while it is verified, before it may
    /// touch the shared cache, so this bounds memory per fetch (and beyond it per-chunk verification
    /// stops being useful for a first byte anyway).
    /// </summary>
    public const long MaxChunkSize = 64L << 20;

    /// <summary>Largest file (1 PiB): keeps every offset and chunk count far from overflow.</summary>
    public const long MaxFileSize = 1L << 50;

    /// <summary>Most chunks one file may have (with the seed's 16 MiB chunks, 1 PiB).</summary>
    public const long MaxChunksPerFile = 1L << 26;

    /// <summary>Longest artifact_id or version: they reach logs, the ready line and the mount's fsname.</summary>
    private const int MaxNameLength = 256;

    public static ModelManifest Load(string path)
    {
        byte[] utf8;
        try { utf8 = File.ReadAllBytes(path); } // one array of the exact size (a streamed read buffers a chunk list whole anyway)
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ManifestException(path, [$"cannot read the file: {e.Message}"]);
        }
        return Parse(utf8, path);
    }

    public static ModelManifest Parse(string json, string source = "<manifest>") => Parse(Encoding.UTF8.GetBytes(json), source);

    /// <summary>From the manifest's UTF-8 bytes: bound directly, chunk hashes straight into 32-byte digests.</summary>
    public static ModelManifest Parse(ReadOnlyMemory<byte> utf8, string source = "<manifest>")
    {
        if (utf8.Span.StartsWith("\uFEFF"u8)) utf8 = utf8[3..]; // a UTF-8 byte order mark, as File.ReadAllText skipped it
        ModelManifest? manifest = null;
        try { manifest = JsonSerializer.Deserialize(utf8.Span, ManifestJsonContext.Default.ModelManifest); }
        catch (Exception e) when (e is InvalidOperationException or JsonException or FormatException) { }
        return manifest is not null && HasEveryRequiredField(manifest) ? Check(manifest, source) : ParseNamingProblems(utf8, source);
    }

    /// <summary>
    /// The slow path, for a manifest that did not bind or lacks a required field: read as a JsonDocument to
    /// report every problem by its entry (pass 1: syntax, with line and position; pass 2: shape).
    /// </summary>
    private static ModelManifest ParseNamingProblems(ReadOnlyMemory<byte> utf8, string source)
    {
        if (utf8.Span.StartsWith("\uFEFF"u8)) utf8 = utf8[3..];
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(utf8, new JsonDocumentOptions { AllowTrailingCommas = false });
        }
        catch (JsonException e)
        {
            throw new ManifestException(source,
                [$"malformed JSON at line {e.LineNumber + 1}, position {e.BytePositionInLine + 1}: {FirstSentence(e.Message)}"]);
        }
        ModelManifest manifest;
        try
        {
            var problems = new List<string>();
            using (document)
            {
                CheckShape(document.RootElement, problems);
                if (problems.Count > 0) throw new ManifestException(source, problems);
            }
            manifest = JsonSerializer.Deserialize(utf8.Span, ManifestJsonContext.Default.ModelManifest)
                       ?? throw new ManifestException(source, ["the manifest is null"]);
        }
        catch (Exception e) when (e is InvalidOperationException or JsonException or FormatException)
        {
            // Valid JSON syntax that still cannot be read as text, e.g. an unpaired surrogate escape ("\ud800"): found by fuzzing.
            throw new ManifestException(source, [$"unreadable text in the JSON: {FirstSentence(e.Message)}"]);
        }
        return Check(manifest, source);
    }

    /// <summary>Pass 3, the rules that need the whole manifest; then normalized. Also for manifests built in memory (generate).</summary>
    public static ModelManifest Check(ModelManifest manifest, string source)
    {
        var problems = new List<string>();
        CheckRules(manifest, problems);
        if (problems.Count > 0) throw new ManifestException(source, problems);
        Normalize(manifest);
        return manifest;
    }

    public static string Serialize(ModelManifest manifest) =>
        JsonSerializer.Serialize(manifest, ManifestJsonContext.Default.ModelManifest);

    /// <summary>The manifest file's bytes: UTF-8 without a byte order mark, ending in a newline (what generate and push write).</summary>
    public static byte[] SerializeToFile(ModelManifest manifest)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(1 << 16);
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
            JsonSerializer.Serialize(writer, manifest, ManifestJsonContext.Default.ModelManifest);
        "\n"u8.CopyTo(buffer.GetSpan(1));
        buffer.Advance(1);
        return buffer.WrittenSpan.ToArray();
    }

    private static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? message[..cut] : message;
    }

    /// <summary>What the shape pass requires, checked on the bound objects (a field absent or null binds to null).</summary>
    private static bool HasEveryRequiredField(ModelManifest m)
    {
        if (m.ArtifactId is null || m.Version is null || m.Files is null) return false;
        if (m.Prefetch is { } prefetch && prefetch.Contains(null!)) return false;
        foreach (var f in m.Files)
            if (f is null || f.Path is null || f.Url is null || f.Sha256 is null || f.Size is null) return false;
        return true;
    }

    // ---- pass 2: shape -------------------------------------------------------------------

    private static void CheckShape(JsonElement root, List<string> problems)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            problems.Add($"the top level must be a JSON object, found {Describe(root.ValueKind)}");
            return;
        }
        RequireKind(root, "artifact_id", JsonValueKind.String, required: true, "the manifest", problems);
        RequireKind(root, "version", JsonValueKind.String, required: true, "the manifest", problems);
        RequireKind(root, "mount_path", JsonValueKind.String, required: false, "the manifest", problems);
        RequireKind(root, "chunk_size", JsonValueKind.Number, required: false, "the manifest", problems);
        RequireKind(root, "chunk_hash", JsonValueKind.String, required: false, "the manifest", problems);
        if (root.TryGetProperty("chunk_size", out var cs) && cs.ValueKind == JsonValueKind.Number && !cs.TryGetInt64(out _))
            problems.Add("chunk_size must be a whole number of bytes");

        if (RequireKind(root, "prefetch", JsonValueKind.Array, required: false, "the manifest", problems) is { } prefetch)
        {
            int i = 0;
            foreach (var item in prefetch.EnumerateArray())
            {
                if (item.ValueKind != JsonValueKind.String)
                    problems.Add($"prefetch[{i}]: expected a string (a file path), found {Describe(item.ValueKind)}");
                i++;
            }
        }

        if (RequireKind(root, "files", JsonValueKind.Array, required: true, "the manifest", problems) is not { } files)
            return;
        int index = 0;
        foreach (var file in files.EnumerateArray())
        {
            string entry = $"files[{index}]";
            if (file.ValueKind != JsonValueKind.Object)
            {
                problems.Add($"{entry}: expected an object, found {Describe(file.ValueKind)}");
                index++;
                continue;
            }
            if (file.TryGetProperty("path", out var p) && p.ValueKind == JsonValueKind.String)
                entry = $"{entry} (\"{Printable(p.GetString()!)}\")";

            RequireKind(file, "path", JsonValueKind.String, required: true, entry, problems);
            RequireKind(file, "url", JsonValueKind.String, required: true, entry, problems);
            RequireKind(file, "sha256", JsonValueKind.String, required: true, entry, problems);
            RequireKind(file, "compression", JsonValueKind.String, required: false, entry, problems);
            if (RequireKind(file, "size", JsonValueKind.Number, required: true, entry, problems) is { } size
                && !size.TryGetInt64(out _))
                problems.Add($"{entry}: size must be a whole number of bytes, found {size.GetRawText()}");
            if (RequireKind(file, "chunks", JsonValueKind.Array, required: false, entry, problems) is { } chunks)
            {
                int c = 0;
                foreach (var chunk in chunks.EnumerateArray())
                {
                    if (chunk.ValueKind != JsonValueKind.String)
                        problems.Add($"{entry}: chunks[{c}]: expected a hex string, found {Describe(chunk.ValueKind)}");
                    c++;
                }
            }
            index++;
        }
    }

    private static JsonElement? RequireKind(JsonElement obj, string name, JsonValueKind kind, bool required,
        string entry, List<string> problems)
    {
        if (!obj.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            if (required) problems.Add($"{entry}: missing required field \"{name}\"");
            return null;
        }
        if (value.ValueKind != kind)
        {
            problems.Add($"{entry}: \"{name}\" must be {Describe(kind)}, found {Describe(value.ValueKind)}");
            return null;
        }
        return value;
    }

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

    // ---- pass 3: rules -------------------------------------------------------------------

    private static void CheckRules(ModelManifest m, List<string> problems)
    {
        if (CheckName(m.ArtifactId) is { } idProblem) problems.Add($"artifact_id {idProblem}");
        if (CheckName(m.Version) is { } versionProblem) problems.Add($"version {versionProblem}");
        if (m.ChunkSize is { } chunkSize && (chunkSize <= 0 || chunkSize > MaxChunkSize))
            problems.Add($"chunk_size must be between 1 and {MaxChunkSize} bytes (64 MiB), found {chunkSize}");
        if (m.ChunkHash is { } chunkHash && !Cache.ChunkHashing.TryParseName(chunkHash, out _))
            problems.Add($"chunk_hash \"{Printable(chunkHash)}\" is not supported (use \"sha256\" or \"blake3\")");
        long landing = m.ChunkSize is > 0 and <= MaxChunkSize ? m.ChunkSize.Value : ModelManifest.DefaultChunkSize;

        var files = m.Files ?? [];
        var seen = new Dictionary<string, int>(files.Count, StringComparer.Ordinal);
        string? checkedOrigin = null; // "scheme://authority/" of the last URL that passed CheckUrl
        for (int i = 0; i < files.Count; i++)
        {
            var f = files[i];
            string entry = null!; // named only when there is a problem to name it in
            void Problem(string text) => problems.Add($"{entry ??= $"files[{i}] (\"{Printable(f.Path ?? "")}\")"}: {text}");
            if (CheckPath(f.Path!) is { } pathProblem) Problem($"path {pathProblem}");
            else if (!seen.TryAdd(f.Path!, i)) Problem($"duplicate path, also files[{seen[f.Path!]}]");

            if (f.Size < 0) Problem($"size must not be negative, found {f.Size}");
            else if (f.Size > MaxFileSize) Problem($"size {f.Size} is larger than the {MaxFileSize} bytes (1 PiB) mlfs serves");
            else if ((f.Size!.Value + landing - 1) / landing > MaxChunksPerFile)
                Problem($"size {f.Size} with chunk_size {landing} makes more than {MaxChunksPerFile} chunks; use a larger chunk_size");
            if (!IsSha256Hex(f.Sha256!)) Problem($"sha256 must be 64 hex digits, found \"{Printable(f.Sha256!)}\"");
            if (f.Compression is { } comp && comp != "none")
                Problem($"compression \"{Printable(comp)}\" is not supported (only \"none\")");
            if (!SameCheckedOrigin(f.Url!, checkedOrigin))
            {
                if (CheckUrl(f.Url!) is { } urlProblem) Problem($"url {urlProblem}");
                else checkedOrigin = OriginText(f.Url!);
            }

            if (f.Chunks is { } chunks)
            {
                if (m.ChunkSize is not { } cs || cs <= 0)
                    Problem($"has chunks but the manifest has no valid chunk_size");
                else if (f.Size >= 0 && f.Size <= MaxFileSize)
                {
                    long expected = (f.Size!.Value + cs - 1) / cs;
                    if (chunks.Count != expected)
                        Problem($"has {chunks.Count} chunk hashes but size {f.Size} with chunk_size {cs} needs {expected}");
                }
                foreach (var (c, text) in chunks.Invalid)
                    Problem($"chunks[{c}] must be 64 hex digits ({m.ChunkHash ?? "sha256"}), found \"{Printable(text)}\"");
            }
        }

        // A path that is both a file and a directory ("a" and "a/b"); parents looked up as slices, not 200,000 new strings.
        var seenBySpan = seen.GetAlternateLookup<ReadOnlySpan<char>>();
        foreach (var path in seen.Keys)
        {
            for (int slash = path.IndexOf('/'); slash > 0; slash = path.IndexOf('/', slash + 1))
            {
                if (seenBySpan.TryGetValue(path.AsSpan(0, slash), out int fileIndex))
                {
                    string parent = path[..slash];
                    problems.Add($"files[{fileIndex}] (\"{Printable(parent)}\"): is a file but files[{seen[path]}] (\"{Printable(path)}\") needs it to be a directory");
                }
            }
        }

        var prefetch = m.Prefetch ?? [];
        for (int i = 0; i < prefetch.Count; i++)
            if (!seen.ContainsKey(prefetch[i]))
                problems.Add($"prefetch[{i}] (\"{Printable(prefetch[i])}\"): names no file in files");
    }

    /// <summary>Null when the path is acceptable, else why not (completing "path ...").</summary>
    public static string? CheckPath(string path)
    {
        if (path.Length == 0) return "is empty";
        if (Encoding.UTF8.GetByteCount(path) > MaxPathBytes) return $"is longer than {MaxPathBytes} bytes";
        if (path[0] == '/') return "must be relative (it starts with '/')";
        if (path.Contains('\\')) return "must use '/' as separator (it contains a backslash)";
        foreach (char ch in path)
        {
            if (ch == '\0') return "contains a NUL character";
            if (char.IsControl(ch)) return $"contains the control character U+{(int)ch:X4}";
        }
        foreach (var range in path.AsSpan().Split('/'))
        {
            var segment = path.AsSpan(range);
            if (segment.Length == 0) return "has an empty segment ('//' or a trailing '/')";
            if (segment is "..") return "contains a '..' segment";
            if (segment is ".") return "contains a '.' segment";
            if (Encoding.UTF8.GetByteCount(segment) > MaxSegmentBytes)
                return $"has a segment longer than {MaxSegmentBytes} bytes";
        }
        return null;
    }

    /// <summary>Null when artifact_id or version is usable, else why not: they reach logs, the ready line and mount options.</summary>
    private static string? CheckName(string? name)
    {
        if (string.IsNullOrWhiteSpace(name)) return "must not be empty";
        if (name.Length > MaxNameLength) return $"is longer than {MaxNameLength} characters";
        foreach (char ch in name)
            if (char.IsControl(ch)) return $"\"{Printable(name)}\" contains the control character U+{(int)ch:X4}";
        return null;
    }

    /// <summary>
    /// Null when the URL may be fetched, else why not. Never shows a query string (it may be a
    /// presigned signature). Refuses credentials in the URL and hosts in link-local and cloud metadata
    /// ranges (checked here, without resolving or connecting); private ranges and loopback stay allowed.
    /// </summary>
    public static string? CheckUrl(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)) return $"\"{Printable(WithoutQuery(url))}\" is not an absolute URL";
        if (uri.Scheme is not ("s3" or "https" or "http")) return $"scheme \"{Printable(uri.Scheme)}\" is not supported (use s3, https or http)";
        if (uri.Scheme == "s3" && string.IsNullOrEmpty(uri.Host)) return "has no bucket";
        if (uri.UserInfo.Length > 0) return "must not carry credentials (user:password@); mlfs signs with the AWS credential chain";
        if (uri.Scheme != "s3" && Storage.HostPolicy.Refuses(uri) is { } why) return $"host {uri.Host} {why}";
        return null;
    }

    /// <summary>
    /// A URL that starts with an origin already checked, followed by a plain path, passes CheckUrl as that
    /// one did (the checks look at the scheme and the authority only): 100,000 files on one bucket are not
    /// parsed 100,000 times.
    /// </summary>
    private static bool SameCheckedOrigin(string url, string? origin)
    {
        if (origin is null || !url.StartsWith(origin, StringComparison.Ordinal) || url.Length == origin.Length) return false;
        foreach (char c in url.AsSpan(origin.Length))
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or '_' or '~' or '/' or '%')) return false;
        return true;
    }

    /// <summary>The text up to the slash after the authority, or null when the authority is anything but plain.</summary>
    private static string? OriginText(string url)
    {
        int scheme = url.IndexOf("://", StringComparison.Ordinal);
        if (scheme <= 0) return null;
        int slash = url.IndexOf('/', scheme + 3);
        if (slash < 0) return null;
        foreach (char c in url.AsSpan(scheme + 3, slash - scheme - 3))
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '.' or ':' or '[' or ']')) return null;
        return url[..(slash + 1)];
    }

    private static string WithoutQuery(string url) => url.IndexOf('?') is var q and >= 0 ? url[..q] + "?…" : url;

    public static bool IsSha256Hex(string s)
    {
        if (s.Length != 64) return false;
        foreach (char c in s)
            if (!char.IsAsciiHexDigit(c)) return false;
        return true;
    }

    private static string Printable(string s)
    {
        var sb = new StringBuilder(s.Length);
        foreach (char c in s.Length > 200 ? s[..200] + "…" : s)
        {
            if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}");
            else sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary>Hex is compared as lower case everywhere (cache keys, verification).</summary>
    private static void Normalize(ModelManifest m)
    {
        foreach (var f in m.Files!)
        {
            f.Sha256 = f.Sha256!.ToLowerInvariant(); // chunk digests are bytes already
            if (f.Compression == "none") f.Compression = "none"; // one string for all, not one per file
        }
    }
}
