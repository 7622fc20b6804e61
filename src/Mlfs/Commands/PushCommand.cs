using System.CommandLine;
using System.Text;
using Amazon.S3;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Manifest;
using MlArtifactFs.Publishing;
using MlArtifactFs.Storage;

namespace Mlfs.Commands;

/// <summary>`mlfs push`: upload a model folder and write its manifest in one step.</summary>
internal static class PushCommand
{
    public static readonly Argument<string> Directory = new("DIR") { Description = "the model folder" };
    public static readonly Argument<string> Destination = new("DEST") { Description = "s3://bucket/prefix" };
    public static readonly Option<string> Id = new("--id") { Description = "artifact_id of the manifest", Required = true };
    public static readonly Option<string> Version = new("--version") { Description = "version of the manifest", Required = true };
    public static readonly Option<string?> Prefetch = new("--prefetch") { Description = "comma-separated files fetched before a mount is ready" };
    public static readonly Option<string> ChunkSize = new("--chunk-size") { Description = "chunk size for per-chunk hashes (1M: see mlfs generate --help)", DefaultValueFactory = _ => "1M" };
    public static readonly Option<string> ChunkHash = GenerateCommand.NewChunkHashOption();
    public static readonly Option<bool> ContentAddressed = new("--content-addressed") { Description = "store files as PREFIX/blobs/<sha256> so versions share storage" };
    public static readonly Option<string?> Endpoint = new("--endpoint") { Description = "S3-compatible endpoint; default AWS_ENDPOINT_URL" };
    public static readonly Option<string?> Output = new("--output", "-o") { Description = "write the manifest here instead of stdout: a file, or s3://bucket/key (beside the model)" };
    public static readonly Option<int> Parallelism = new("--parallel") { Description = "uploads in flight", DefaultValueFactory = _ => 4 };

    public static readonly Option<string?> SignKey = new("--sign-key")
    {
        Description = "sign the manifest with this ECDSA P-256 private key (PEM): writes OUTPUT.sig beside it (needs -o)",
    };

    public static Command Create()
    {
        var command = new Command("push", "Upload a model folder to S3 (skipping what is already there) and write its manifest.")
        {
            Directory, Destination, Id, Version, Prefetch, ChunkSize, ChunkHash, ContentAddressed, Endpoint, Output, Parallelism, SignKey,
        };
        command.SetAction((parse, cancel) => RunAsync(parse, cancel));
        return command;
    }

    private static bool IsS3(string output) => output.StartsWith("s3://", StringComparison.Ordinal);

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken cancel)
    {
        if (parse.GetValue(Output) is { } target && !IsS3(target) && MlArtifactFs.Manifest.ManifestSource.IsRemote(target))
        {
            Console.Error.WriteLine($"mlfs push: -o takes a file or s3://bucket/key, not \"{target}\"");
            return ExitCodes.InvalidInput;
        }
        if (!Sizes.TryParse(parse.GetValue(ChunkSize)!, out long chunkSize) || chunkSize <= 0 || chunkSize > ManifestLoader.MaxChunkSize)
        {
            Console.Error.WriteLine($"mlfs push: --chunk-size \"{parse.GetValue(ChunkSize)}\" is not a size between 1 and 1G");
            return ExitCodes.InvalidInput;
        }
        if (!MlArtifactFs.Cache.ChunkHashing.TryParseName(parse.GetValue(ChunkHash), out var chunkHash))
        {
            Console.Error.WriteLine($"mlfs push: --chunk-hash \"{parse.GetValue(ChunkHash)}\" is not blake3 or sha256");
            return ExitCodes.InvalidInput;
        }
        System.Security.Cryptography.ECDsa? signKey = null;
        if (parse.GetValue(SignKey) is { } keyPath)
        {
            if (parse.GetValue(Output) is null)
            {
                Console.Error.WriteLine("mlfs push: --sign-key needs -o FILE or -o s3://bucket/key (the signature is written beside it, with .sig appended)");
                return ExitCodes.InvalidInput;
            }
            try { signKey = ManifestSignature.LoadKey(keyPath, requirePrivate: true); } // before anything is uploaded
            catch (ArgumentException e)
            {
                Console.Error.WriteLine($"mlfs push: --sign-key: {e.Message}");
                return ExitCodes.InvalidInput;
            }
        }
        using var signing = signKey;
        using var observability = Logging.Start("warning");
        var settings = S3Settings.FromEnvironment(parse.GetValue(Endpoint));
        using var client = ModelPublisher.CreateClient(settings);
        var publisher = new ModelPublisher(client, observability.LoggerFactory.CreateLogger("mlfs"));
        bool terminal = !Console.IsErrorRedirected;
        var progress = terminal ? new Progress<(string Path, long Bytes)>(p => Console.Error.Write($"\r\x1b[Kuploading {p.Path}: {Sizes.Format(p.Bytes)}")) : null;
        try
        {
            var (manifest, report) = await publisher.PushAsync(new PushOptions
            {
                Folder = parse.GetValue(Directory)!,
                Destination = parse.GetValue(Destination)!,
                ArtifactId = parse.GetValue(Id)!,
                Version = parse.GetValue(Version)!,
                Prefetch = (parse.GetValue(Prefetch) ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                ChunkSize = chunkSize,
                ChunkHash = chunkHash,
                ContentAddressed = parse.GetValue(ContentAddressed),
                Parallelism = Math.Max(1, parse.GetValue(Parallelism)),
            }, progress, cancel).ConfigureAwait(false);
            if (terminal) Console.Error.Write("\r\x1b[K");
            Console.Error.WriteLine($"pushed: {report.FilesUploaded} uploaded ({Sizes.Format(report.BytesUploaded)}), {report.FilesSkipped} already present ({Sizes.Format(report.BytesSkipped)})");
            byte[] bytes = ManifestLoader.SerializeToFile(manifest);
            if (parse.GetValue(Output) is { } output)
            {
                byte[]? signature = signKey is null ? null : ManifestSignature.Sign(bytes, signKey);
                string signatureAt = ManifestSignature.SignaturePathFor(output); // a file or an object beside the manifest
                if (IsS3(output))
                {
                    // The signature first: a mount that requires one never finds the new manifest without it.
                    if (signature is not null) await publisher.PutObjectAsync(signatureAt, signature, "application/json", cancel).ConfigureAwait(false);
                    await publisher.PutObjectAsync(output, bytes, "application/json", cancel).ConfigureAwait(false);
                }
                else
                {
                    await File.WriteAllBytesAsync(output, bytes, cancel).ConfigureAwait(false);
                    if (signature is not null) await File.WriteAllBytesAsync(signatureAt, signature, cancel).ConfigureAwait(false);
                }
                Console.Error.WriteLine($"manifest: {output}");
                if (signKey is not null) Console.Error.WriteLine($"signed: {signatureAt} (key {ManifestSignature.KeyHint(signKey)})");
            }
            else
            {
                await using var stdout = Console.OpenStandardOutput();
                await stdout.WriteAsync(bytes, cancel).ConfigureAwait(false);
            }
            return ExitCodes.Success;
        }
        catch (AmazonS3Exception e)
        {
            Console.Error.WriteLine($"mlfs push: S3 refused: HTTP {(int)e.StatusCode} {e.ErrorCode}: {e.Message}");
            return ExitCodes.StorageError;
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException or ManifestException)
        {
            Console.Error.WriteLine($"mlfs push: {e.Message}");
            return ExitCodes.InvalidInput;
        }
        catch (Exception e) when (e is HttpRequestException or Amazon.Runtime.AmazonServiceException or Amazon.Runtime.AmazonClientException)
        {
            Console.Error.WriteLine($"mlfs push: cannot reach S3: {e.Message}");
            return ExitCodes.StorageError;
        }
    }
}
