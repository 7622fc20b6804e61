using System.Text;

namespace MlArtifactFs.Manifest;

/// <summary>Pass 3 of <see cref="ManifestLoader"/>: the rules that need the whole manifest, and the checks of paths, names and URLs.</summary>
public static partial class ManifestLoader
{
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

    /// <summary>A URL as it may be shown: never its query (a presigned URL's signature).</summary>
    internal static string WithoutQuery(string url) => url.IndexOf('?') is var q and >= 0 ? url[..q] + "?…" : url;

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
