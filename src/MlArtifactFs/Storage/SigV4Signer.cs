using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using Amazon.Runtime;

namespace MlArtifactFs.Storage;

/// <summary>
/// AWS Signature Version 4 for GET requests with an empty body (ranged object reads). Signs
/// host, x-amz-content-sha256, x-amz-date and, for temporary credentials, x-amz-security-token.
/// The Range header is deliberately left unsigned (allowed by SigV4) so one signature shape fits
/// every range. Nothing here is ever logged.
/// </summary>
public static class SigV4Signer
{
    private const string EmptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    public static void Sign(HttpRequestMessage request, ImmutableCredentials credentials, string region, DateTime utcNow)
    {
        var uri = request.RequestUri!;
        string amzDate = utcNow.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        string date = amzDate[..8];
        string host = uri.IsDefaultPort ? uri.Host : $"{uri.Host}:{uri.Port}";

        request.Headers.Host = host;
        request.Headers.TryAddWithoutValidation("x-amz-date", amzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", EmptyPayloadHash);
        bool token = credentials.UseToken;
        if (token) request.Headers.TryAddWithoutValidation("x-amz-security-token", credentials.Token);

        string signedHeaders = token ? "host;x-amz-content-sha256;x-amz-date;x-amz-security-token" : "host;x-amz-content-sha256;x-amz-date";
        var canonical = new StringBuilder();
        canonical.Append(request.Method.Method).Append('\n');
        canonical.Append(uri.AbsolutePath.Length == 0 ? "/" : uri.AbsolutePath).Append('\n'); // already S3-encoded by ObjectLocation
        canonical.Append(CanonicalQuery(uri.Query)).Append('\n');
        canonical.Append("host:").Append(host).Append('\n');
        canonical.Append("x-amz-content-sha256:").Append(EmptyPayloadHash).Append('\n');
        canonical.Append("x-amz-date:").Append(amzDate).Append('\n');
        if (token) canonical.Append("x-amz-security-token:").Append(credentials.Token).Append('\n');
        canonical.Append('\n').Append(signedHeaders).Append('\n').Append(EmptyPayloadHash);

        string scope = $"{date}/{region}/s3/aws4_request";
        string toSign = $"AWS4-HMAC-SHA256\n{amzDate}\n{scope}\n{Hex(SHA256.HashData(Encoding.UTF8.GetBytes(canonical.ToString())))}";
        byte[] key = Hmac(Encoding.UTF8.GetBytes("AWS4" + credentials.SecretKey), date);
        key = Hmac(key, region);
        key = Hmac(key, "s3");
        key = Hmac(key, "aws4_request");
        string signature = Hex(Hmac(key, toSign));
        request.Headers.Authorization = new AuthenticationHeaderValue("AWS4-HMAC-SHA256",
            $"Credential={credentials.AccessKey}/{scope}, SignedHeaders={signedHeaders}, Signature={signature}");
    }

    private static string CanonicalQuery(string query)
    {
        if (string.IsNullOrEmpty(query) || query == "?") return "";
        var pairs = query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p =>
            {
                int eq = p.IndexOf('=');
                string k = Uri.UnescapeDataString(eq < 0 ? p : p[..eq]);
                string v = eq < 0 ? "" : Uri.UnescapeDataString(p[(eq + 1)..]);
                return (K: ObjectLocation.S3Encode(k), V: ObjectLocation.S3Encode(v));
            })
            .OrderBy(p => p.K, StringComparer.Ordinal).ThenBy(p => p.V, StringComparer.Ordinal);
        return string.Join('&', pairs.Select(p => $"{p.K}={p.V}"));
    }

    private static byte[] Hmac(byte[] key, string data) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(data));

    private static string Hex(byte[] bytes) => Convert.ToHexStringLower(bytes);
}
