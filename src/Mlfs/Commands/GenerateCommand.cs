using System.CommandLine;
using System.Text;
using MlArtifactFs.Manifest;

namespace Mlfs.Commands;

/// <summary>`mlfs generate`: hash a model folder and print its manifest.</summary>
internal static class GenerateCommand
{
    public static readonly Option<string> Id = new("--id") { Description = "artifact_id of the manifest", Required = true };
    public static readonly Option<string> Version = new("--version") { Description = "version of the manifest (e.g. v1)", Required = true };
    public static readonly Option<string> UrlPrefix = new("--url-prefix")
    {
        Description = "where the folder is uploaded: url = PREFIX/path (s3://bucket/prefix, https://...)",
        Required = true,
    };
    public static readonly Option<string?> Prefetch = new("--prefetch") { Description = "comma-separated files fetched before the mount is ready (e.g. config.json,tokenizer.json)" };
    public static readonly Option<string> ChunkSize = new("--chunk-size")
    {
        Description = "chunk size for per-chunk hashes (e.g. 1M, the default: the first byte of a cold read waits for one chunk); 0 writes a seed-format manifest without chunks",
        DefaultValueFactory = _ => "1M",
    };
    public static readonly Option<string> ChunkHash = NewChunkHashOption();

    /// <summary>--chunk-hash, shared by generate and push.</summary>
    internal static Option<string> NewChunkHashOption() => new("--chunk-hash")
    {
        Description = "hash of each chunk: blake3 (the default: about two thirds of SHA-256's cost, 0.4 against 0.6 CPU s/GiB, for every reader) or sha256 (what mlfs before 2026-12 reads)",
        DefaultValueFactory = _ => "blake3",
    };

    public static readonly Option<string?> MountPath = new("--mount-path") { Description = "mount_path recorded in the manifest" };
    public static readonly Option<string?> Output = new("--output", "-o") { Description = "write the manifest to this file instead of stdout" };
    public static readonly Argument<string> Directory = new("DIR") { Description = "the model folder" };

    public static Command Create()
    {
        var command = new Command("generate", "Walk a model folder and write its JSON manifest (sizes, URLs, SHA-256 of files, BLAKE3 or SHA-256 of chunks).")
        {
            Id, Version, UrlPrefix, Prefetch, ChunkSize, ChunkHash, MountPath, Output, Directory,
        };
        command.SetAction((parse, cancel) => RunAsync(parse, cancel));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken cancel)
    {
        string chunkText = parse.GetValue(ChunkSize)!;
        if (!Sizes.TryParse(chunkText, out long chunkSize) || chunkSize > ManifestLoader.MaxChunkSize)
        {
            Console.Error.WriteLine($"mlfs generate: --chunk-size \"{chunkText}\" is not a size between 0 and 1G");
            return ExitCodes.InvalidInput;
        }
        if (!MlArtifactFs.Cache.ChunkHashing.TryParseName(parse.GetValue(ChunkHash), out var chunkHash))
        {
            Console.Error.WriteLine($"mlfs generate: --chunk-hash \"{parse.GetValue(ChunkHash)}\" is not blake3 or sha256");
            return ExitCodes.InvalidInput;
        }
        var prefetch = (parse.GetValue(Prefetch) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string dir = parse.GetValue(Directory)!;
        var options = new GenerateOptions(parse.GetValue(Id)!, parse.GetValue(Version)!, parse.GetValue(UrlPrefix)!, prefetch,
            chunkSize == 0 ? ModelManifest.DefaultChunkSize : chunkSize, parse.GetValue(MountPath), chunkHash);
        bool showProgress = !Console.IsErrorRedirected;
        var progress = showProgress ? new Progress<(string Path, long Bytes)>(p => Console.Error.Write($"\r\x1b[Khashing {p.Path}: {Sizes.Format(p.Bytes)}")) : null;
        try
        {
            var started = System.Diagnostics.Stopwatch.GetTimestamp();
            // Streamed as files are hashed; a file is written under a temporary name and renamed once complete,
            // so a failed run never leaves half a manifest where a mount would read it.
            (int Files, long Bytes) written;
            if (parse.GetValue(Output) is { } output)
            {
                string partial = $"{output}.partial-{Environment.ProcessId}";
                try
                {
                    await using (var file = new FileStream(partial, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
                        written = await ManifestGenerator.WriteAsync(dir, options, file, seedFormat: chunkSize == 0, progress, cancel).ConfigureAwait(false);
                    File.Move(partial, output, overwrite: true);
                }
                finally { File.Delete(partial); }
            }
            else
            {
                await using var stdout = Console.OpenStandardOutput();
                written = await ManifestGenerator.WriteAsync(dir, options, stdout, seedFormat: chunkSize == 0, progress, cancel).ConfigureAwait(false);
            }
            if (showProgress)
            {
                double seconds = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds;
                Console.Error.WriteLine($"\r\x1b[K{written.Files} files, {Sizes.Format(written.Bytes)} hashed in {seconds:0.0} s ({written.Bytes / Math.Max(seconds, 1e-9) / 1e6:0} MB/s)");
            }
            return ExitCodes.Success;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or ManifestException)
        {
            Console.Error.WriteLine($"mlfs generate: {e.Message}");
            return ExitCodes.InvalidInput;
        }
    }
}
