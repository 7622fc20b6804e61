using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace MlArtifactFs.Storage;

/// <summary>
/// Ranged GETs over pooled HTTP/1.1 connections (the fastest way to stream a range into a file),
/// SigV4-signed for S3 locations, plain for presigned and public URLs. One instance per mount.
/// Checks every response: 206 with the Content-Range we asked for (or 200 carrying exactly the
/// whole object), Content-Length equal to the range; anything else is an error, never data.
/// </summary>
public sealed class HttpObjectStore : IObjectStore, IDisposable
{
    private readonly HttpClient _http;
    private readonly S3Settings _settings;

    public HttpObjectStore(S3Settings settings, int maxConnections = 16, TimeSpan? connectTimeout = null)
    {
        _settings = settings;
        var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = maxConnections,
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(60),
            ConnectTimeout = connectTimeout ?? TimeSpan.FromSeconds(10),
            AutomaticDecompression = DecompressionMethods.None,
            AllowAutoRedirect = false, // a redirect from S3 is an error to report (wrong region), not to follow unsigned
            UseCookies = false,
            UseProxy = Environment.GetEnvironmentVariable("HTTPS_PROXY") is not null || Environment.GetEnvironmentVariable("HTTP_PROXY") is not null,
            ConnectCallback = (context, cancel) => HostPolicy.ConnectAsync(context, literalOnly: false, cancel), // link-local and metadata refused before connecting
        };
        _http = new HttpClient(handler) { Timeout = Timeout.InfiniteTimeSpan, DefaultRequestVersion = HttpVersion.Version11 };
    }

    public async Task<Stream> OpenRangeAsync(ObjectLocation location, long offset, long length, CancellationToken cancel)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        long last = offset + length - 1;
        string what = $"{location.Display} bytes {offset}-{last}";
        using var request = new HttpRequestMessage(HttpMethod.Get, location.RequestUri);
        request.Headers.Range = new RangeHeaderValue(offset, last);
        var response = await SendAsync(request, location, what, cancel).ConfigureAwait(false);

        try
        {
            int status = (int)response.StatusCode;
            Activity.Current?.SetTag("http.response.status_code", status); // on the caller's mlfs.get span
            if (status != 206 && status != 200) throw await ErrorFromAsync(response, what, cancel).ConfigureAwait(false);

            var content = response.Content.Headers;
            if (status == 206)
            {
                if (content.ContentRange is not { } range || range.From != offset || range.To != last)
                    throw new ObjectStoreException(ObjectStoreErrorKind.BadResponse,
                        $"GET {what}: server answered Content-Range {content.ContentRange?.ToString() ?? "(none)"}", status);
            }
            else if (offset != 0 || content.ContentLength != length)
            {
                // 200 to a range request is only usable when it is exactly the bytes asked for (a whole small object).
                throw new ObjectStoreException(ObjectStoreErrorKind.BadResponse,
                    $"GET {what}: server ignored the range (HTTP 200, {content.ContentLength?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "unknown"} bytes)", status);
            }
            if (content.ContentLength is { } len && len != length)
                throw new ObjectStoreException(ObjectStoreErrorKind.BadResponse, $"GET {what}: Content-Length {len}, expected {length}", status);

            var body = await response.Content.ReadAsStreamAsync(cancel).ConfigureAwait(false);
            return new ResponseStream(body, response);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The whole of a small object (a manifest, its signature), at most <paramref name="maxBytes"/> of it;
    /// null when it does not exist (404). A larger object is refused before or while it is read
    /// (<see cref="ObjectStoreErrorKind.TooLarge"/>): a hostile server cannot make the caller buffer gigabytes.
    /// </summary>
    public async Task<byte[]?> GetObjectAsync(ObjectLocation location, long maxBytes, CancellationToken cancel)
    {
        string what = location.Display;
        using var request = new HttpRequestMessage(HttpMethod.Get, location.RequestUri);
        var response = await SendAsync(request, location, what, cancel).ConfigureAwait(false);
        using (response)
        {
            int status = (int)response.StatusCode;
            if (status == 404) return null;
            if (status != 200) throw await ErrorFromAsync(response, what, cancel).ConfigureAwait(false);
            string tooLarge = $"GET {what}: the object is larger than the limit of {maxBytes} bytes";
            long? declared = response.Content.Headers.ContentLength;
            if (declared > maxBytes) throw new ObjectStoreException(ObjectStoreErrorKind.TooLarge, tooLarge, status);
            await using var body = await response.Content.ReadAsStreamAsync(cancel).ConfigureAwait(false);
            var bytes = new MemoryStream((int)Math.Min(declared ?? 64 << 10, 64 << 20)); // grows past 64 MiB only as bytes arrive
            var buffer = new byte[64 << 10];
            int n;
            try
            {
                while ((n = await body.ReadAsync(buffer, cancel).ConfigureAwait(false)) > 0)
                {
                    if (bytes.Length + n > maxBytes) throw new ObjectStoreException(ObjectStoreErrorKind.TooLarge, tooLarge, status);
                    bytes.Write(buffer, 0, n);
                }
            }
            catch (Exception e) when (e is HttpRequestException or IOException)
            {
                throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {what}: the body broke off after {bytes.Length} bytes ({e.Message})", status, e);
            }
            if (declared is { } length && bytes.Length != length)
                throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {what}: {bytes.Length} bytes of the {length} announced", status);
            // Announced and arrived exactly: the stream's own array, not a copy of a manifest of tens of MB.
            return bytes.TryGetBuffer(out var written) && written.Offset == 0 && written.Count == written.Array!.Length ? written.Array : bytes.ToArray();
        }
    }

    /// <summary>Signs (for S3 locations) and sends; headers are in when it returns. Connection failures are transient.</summary>
    private async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, ObjectLocation location, string what, CancellationToken cancel)
    {
        if (location.Signed && await _settings.GetCredentialsAsync().ConfigureAwait(false) is { } credentials)
            SigV4Signer.Sign(request, credentials, _settings.Region, DateTime.UtcNow);
        try
        {
            return await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {what}: {Describe(e)}", null, e);
        }
        catch (OperationCanceledException e) when (!cancel.IsCancellationRequested)
        {
            throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {what}: timed out", null, e);
        }
    }

    /// <summary>The error an answer other than 200/206 means, named by status and S3 error code.</summary>
    private static async Task<ObjectStoreException> ErrorFromAsync(HttpResponseMessage response, string what, CancellationToken cancel)
    {
        int status = (int)response.StatusCode;
        string code = await ReadErrorCodeAsync(response, cancel).ConfigureAwait(false);
        var kind = status switch
        {
            404 => ObjectStoreErrorKind.NotFound,
            401 or 403 => ObjectStoreErrorKind.AccessDenied,
            408 or 429 or >= 500 => ObjectStoreErrorKind.Transient,
            400 when code is "RequestTimeout" or "SlowDown" => ObjectStoreErrorKind.Transient,
            >= 400 => ObjectStoreErrorKind.Rejected,
            _ => ObjectStoreErrorKind.BadResponse, // 1xx/3xx: nothing we can read
        };
        string hint = kind switch
        {
            ObjectStoreErrorKind.NotFound => " (object not found)",
            ObjectStoreErrorKind.AccessDenied => " (access denied: check credentials and permissions)",
            _ => "",
        };
        return new ObjectStoreException(kind, $"GET {what}: HTTP {status}{(code.Length > 0 ? " " + code : "")}{hint}", status);
    }

    /// <summary>An error body is read up to this much (an S3 error is a few hundred bytes; a hostile one may be a gigabyte).</summary>
    private const int MaxErrorBody = 64 << 10;

    /// <summary>The S3 error code of an error answer, from at most <see cref="MaxErrorBody"/> bytes of it; letters and digits only.</summary>
    private static async Task<string> ReadErrorCodeAsync(HttpResponseMessage response, CancellationToken cancel)
    {
        try
        {
            await using var body = await response.Content.ReadAsStreamAsync(cancel).ConfigureAwait(false);
            var buffer = new byte[MaxErrorBody];
            int got = 0, n;
            while (got < buffer.Length && (n = await body.ReadAsync(buffer.AsMemory(got), cancel).ConfigureAwait(false)) > 0) got += n;
            string text = System.Text.Encoding.UTF8.GetString(buffer, 0, got);
            int start = text.IndexOf("<Code>", StringComparison.Ordinal);
            int end = text.IndexOf("</Code>", StringComparison.Ordinal);
            if (start < 0 || end <= start) return "";
            string code = text[(start + 6)..end];
            return code.Length <= 64 && code.All(char.IsAsciiLetterOrDigit) ? code : "";
        }
        catch (Exception e) when (e is HttpRequestException or IOException) { return ""; }
    }

    private static string Describe(HttpRequestException e) => e.InnerException switch
    {
        SocketException s => $"connection failed ({s.SocketErrorCode})",
        IOException io => $"connection error ({io.Message})",
        _ => e.HttpRequestError.ToString(),
    };

    public void Dispose() => _http.Dispose();

    /// <summary>Keeps the response alive while its body is read; disposing one disposes both.</summary>
    private sealed class ResponseStream(Stream inner, HttpResponseMessage response) : Stream
    {
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            inner.ReadAsync(buffer, cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
                response.Dispose();
            }
            base.Dispose(disposing);
        }
    }
}
