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
public static partial class ManifestLoader
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

    /// <summary>A local manifest file (mount and switch load theirs through <see cref="ManifestSource"/>, which also fetches and verifies).</summary>
    public static ModelManifest Load(string path) => Parse(ManifestSource.ReadLocal(path, ManifestSource.DefaultMaxBytes), path);

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
}
