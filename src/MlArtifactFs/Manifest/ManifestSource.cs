using System.Security.Cryptography;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Manifest;

/// <summary>A manifest as loaded for a mount or a switch: the model, who signed it (null when not checked), its size in bytes.</summary>
public sealed record LoadedManifest(ModelManifest Manifest, string? SignedBy, long Bytes);

/// <summary>
/// Loads the manifest a mount or a switch names: a local file, or an object (<c>s3://bucket/key</c>, an http(s)
/// URL) fetched with the mount's credentials, endpoint and host policy. Its bytes are read once and bounded;
/// with publishers' keys, the signature beside it (<c>MANIFEST.sig</c>, found the same way) is checked over
/// exactly those bytes, and those bytes are what is parsed: no second read for a writer to race.
/// </summary>
public static class ManifestSource
{
    /// <summary>Largest manifest loaded by default: a million chunk hashes take about 70 MB of JSON.</summary>
    public const long DefaultMaxBytes = 512L << 20;

    private const int Attempts = 3;
    private static readonly TimeSpan AttemptTimeout = TimeSpan.FromSeconds(60);

    public static bool IsRemote(string source) =>
        source.StartsWith("s3://", StringComparison.Ordinal) || source.StartsWith("https://", StringComparison.OrdinalIgnoreCase)
        || source.StartsWith("http://", StringComparison.OrdinalIgnoreCase);

    /// <summary>Where a remote manifest's signature lives: the same object path with <c>.sig</c> appended (a query is not carried over).</summary>
    public static string SignatureUrlFor(string url)
    {
        var uri = new Uri(url, UriKind.Absolute);
        return uri.GetLeftPart(UriPartial.Path) + ".sig";
    }

    /// <summary>
    /// The manifest at <paramref name="source"/>, verified against <paramref name="keys"/> when there are any.
    /// <paramref name="store"/> is needed only for a remote source. Throws <see cref="ManifestException"/>
    /// (unusable: malformed, too large, a refused URL), <see cref="ManifestSignatureException"/> (refused by
    /// the keys) or <see cref="ObjectStoreException"/> (storage could not be read).
    /// </summary>
    public static async Task<LoadedManifest> LoadAsync(string source, IReadOnlyList<ECDsa> keys, HttpObjectStore? store, S3Settings s3,
        long maxBytes, CancellationToken cancel)
    {
        string name = source;
        byte[] bytes;
        byte[]? bundle = null;
        string signatureName;
        if (IsRemote(source))
        {
            ArgumentNullException.ThrowIfNull(store);
            if (ManifestLoader.CheckUrl(source) is { } refused) throw new ManifestException(ManifestLoader.WithoutQuery(source), [$"the manifest's URL {refused}"]);
            var location = ObjectLocation.Resolve(source, s3);
            name = location.Display;
            bytes = await FetchAsync(store, location, maxBytes, cancel).ConfigureAwait(false)
                    ?? throw new ObjectStoreException(ObjectStoreErrorKind.NotFound, $"the manifest {name} does not exist (HTTP 404)", 404);
            var signature = ObjectLocation.Resolve(SignatureUrlFor(source), s3);
            signatureName = signature.Display;
            if (keys.Count > 0) bundle = await FetchSignatureAsync(store, signature, name, cancel).ConfigureAwait(false);
        }
        else
        {
            bytes = ReadLocal(source, maxBytes);
            signatureName = ManifestSignature.SignaturePathFor(source);
            if (keys.Count > 0) bundle = ReadLocalSignature(source, signatureName);
        }
        if (keys.Count == 0) return new LoadedManifest(ManifestLoader.Parse(bytes, name), null, bytes.Length);
        string signedBy = ManifestSignature.Verify(name, bytes, bundle, keys, signatureName);
        return new LoadedManifest(ManifestLoader.Parse(bytes, name), signedBy, bytes.Length);
    }

    /// <summary>A local manifest's bytes, refused above <paramref name="maxBytes"/>.</summary>
    internal static byte[] ReadLocal(string path, long maxBytes)
    {
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            if (file.Length > maxBytes) throw TooLarge(path, file.Length, maxBytes);
            var bytes = new byte[file.Length]; // one array of the exact size (a streamed read buffers a chunk list whole anyway)
            file.ReadExactly(bytes);
            return bytes;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ManifestException(path, [$"cannot read the file: {e.Message}"]);
        }
    }

    private static byte[]? ReadLocalSignature(string path, string sigPath)
    {
        try
        {
            using var sig = new FileStream(sigPath, FileMode.Open, FileAccess.Read);
            if (sig.Length > ManifestSignature.MaxBundleBytes)
                throw new ManifestSignatureException(path, SignatureProblem.MalformedBundle, $"its signature {sigPath} is larger than {ManifestSignature.MaxBundleBytes >> 20} MiB");
            var bundle = new byte[sig.Length];
            sig.ReadExactly(bundle);
            return bundle;
        }
        catch (FileNotFoundException) { return null; }
    }

    private static async Task<byte[]?> FetchSignatureAsync(HttpObjectStore store, ObjectLocation signature, string manifest, CancellationToken cancel)
    {
        try { return await FetchAsync(store, signature, ManifestSignature.MaxBundleBytes, cancel).ConfigureAwait(false); }
        catch (ManifestException)
        {
            throw new ManifestSignatureException(manifest, SignatureProblem.MalformedBundle, $"its signature {signature.Display} is larger than {ManifestSignature.MaxBundleBytes >> 20} MiB");
        }
    }

    /// <summary>A small object whole, null when it does not exist; transient failures are tried again (S3 answers 503 SlowDown).</summary>
    private static async Task<byte[]?> FetchAsync(HttpObjectStore store, ObjectLocation location, long maxBytes, CancellationToken cancel)
    {
        for (int attempt = 1; ; attempt++)
        {
            // A server that sends headers and then nothing must not hold a mount or a switch forever.
            using var attemptTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            attemptTimeout.CancelAfter(AttemptTimeout);
            try { return await store.GetObjectAsync(location, maxBytes, attemptTimeout.Token).ConfigureAwait(false); }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                if (attempt >= Attempts)
                    throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"cannot fetch {location.Display}: no complete answer within {AttemptTimeout.TotalSeconds:0} s, {Attempts} times");
            }
            catch (ObjectStoreException e) when (e.Kind == ObjectStoreErrorKind.TooLarge)
            {
                throw new ManifestException(location.Display, [$"is larger than the limit of {Describe(maxBytes)} (--max-manifest-size)"]);
            }
            catch (ObjectStoreException e) when (e.IsTransient && attempt < Attempts)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(250 << attempt), cancel).ConfigureAwait(false);
            }
            catch (ObjectStoreException e)
            {
                throw new ObjectStoreException(e.Kind, $"cannot fetch {location.Display}: {e.Message}", e.Status, e);
            }
        }
    }

    private static ManifestException TooLarge(string name, long size, long maxBytes) =>
        new(name, [$"is {Describe(size)}, larger than the limit of {Describe(maxBytes)} (--max-manifest-size)"]);

    private static string Describe(long bytes) => bytes >= 1 << 20 ? $"{bytes / (double)(1 << 20):0.#} MiB" : $"{bytes} bytes";
}
