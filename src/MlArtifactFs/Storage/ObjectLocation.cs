namespace MlArtifactFs.Storage;

/// <summary>
/// Where a file's bytes live and how to ask for them. Built from a manifest URL:
/// <list type="bullet">
/// <item><c>s3://bucket/key</c>: signed; sent to the configured endpoint (path style) or to AWS (virtual-hosted).</item>
/// <item>AWS S3 https URLs (virtual-hosted or path style): signed; redirected to the endpoint when one is configured.</item>
/// <item>URLs on the configured endpoint: signed, path style.</item>
/// <item>Presigned URLs (X-Amz-Signature in the query) and any other http(s) URL: plain unsigned GETs.</item>
/// </list>
/// <see cref="Display"/> is the only form that may be logged: it never carries a query string.
/// </summary>
public sealed record ObjectLocation(Uri RequestUri, bool Signed, string? Bucket, string? Key, string Display)
{
    public static ObjectLocation Resolve(string url, S3Settings settings)
    {
        var uri = new Uri(url, UriKind.Absolute);
        string display = uri.GetLeftPart(UriPartial.Path);
        if (uri.Scheme == "s3")
        {
            string bucket = uri.Host;
            string key = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
            return SignedLocation(bucket, key, settings, $"s3://{bucket}/{key}");
        }

        bool presigned = uri.Query.Contains("X-Amz-Signature=", StringComparison.OrdinalIgnoreCase)
                         || uri.Query.Contains("Signature=", StringComparison.Ordinal);
        if (presigned) return new ObjectLocation(uri, false, null, null, display + " (presigned)");

        if (settings.Endpoint is { } endpoint && SameOrigin(uri, endpoint))
        {
            // Path style on the endpoint: /bucket/key...
            var parts = uri.AbsolutePath.TrimStart('/').Split('/', 2);
            if (parts.Length == 2 && settings.HasCredentials)
                return SignedLocation(parts[0], Uri.UnescapeDataString(parts[1]), settings, display);
            return new ObjectLocation(uri, false, null, null, display);
        }

        if (TryParseAwsUrl(uri, out var awsBucket, out var awsKey) && (settings.HasCredentials || settings.Endpoint is not null))
            return SignedLocation(awsBucket, awsKey, settings, display);

        return new ObjectLocation(uri, false, null, null, display);
    }

    private static ObjectLocation SignedLocation(string bucket, string key, S3Settings settings, string display)
    {
        string encodedKey = string.Join('/', key.Split('/').Select(S3Encode));
        Uri request = settings.Endpoint is { } endpoint
            ? new Uri($"{endpoint.GetLeftPart(UriPartial.Authority)}{endpoint.AbsolutePath.TrimEnd('/')}/{S3Encode(bucket)}/{encodedKey}")
            : new Uri($"https://{bucket}.s3.{settings.Region}.amazonaws.com/{encodedKey}");
        return new ObjectLocation(request, settings.HasCredentials, bucket, key, display);
    }

    private static bool SameOrigin(Uri a, Uri b) =>
        a.Scheme == b.Scheme && string.Equals(a.Host, b.Host, StringComparison.OrdinalIgnoreCase) && a.Port == b.Port;

    /// <summary>bucket.s3.amazonaws.com/key, bucket.s3.REGION.amazonaws.com/key, s3[.REGION].amazonaws.com/bucket/key.</summary>
    private static bool TryParseAwsUrl(Uri uri, out string bucket, out string key)
    {
        bucket = key = "";
        string host = uri.Host.ToLowerInvariant();
        if (!host.EndsWith(".amazonaws.com", StringComparison.Ordinal)) return false;
        string path = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        int s3 = host.IndexOf(".s3.", StringComparison.Ordinal) is var i and >= 0 ? i : host.IndexOf(".s3-", StringComparison.Ordinal);
        if (s3 > 0)
        {
            bucket = uri.Host[..s3];
            key = path;
            return key.Length > 0;
        }
        if (host.StartsWith("s3.", StringComparison.Ordinal) || host.StartsWith("s3-", StringComparison.Ordinal))
        {
            var parts = path.Split('/', 2);
            if (parts.Length < 2) return false;
            bucket = parts[0];
            key = parts[1];
            return true;
        }
        return false;
    }

    /// <summary>S3's URI encoding: everything but unreserved characters, as SigV4 requires.</summary>
    public static string S3Encode(string segment)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(segment);
        var sb = new System.Text.StringBuilder(bytes.Length * 3);
        foreach (byte b in bytes)
        {
            if (b is >= (byte)'A' and <= (byte)'Z' or >= (byte)'a' and <= (byte)'z' or >= (byte)'0' and <= (byte)'9'
                or (byte)'-' or (byte)'_' or (byte)'.' or (byte)'~')
                sb.Append((char)b);
            else
                sb.Append('%').Append(b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }
}
