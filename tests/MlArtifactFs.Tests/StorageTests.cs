using Amazon.Runtime;
using MlArtifactFs.Storage;

namespace MlArtifactFs.Tests;

public class StorageTests
{
    private static readonly S3Settings Aws = new(null, "us-east-1", new BasicAWSCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"));
    private static readonly S3Settings Local = new(new Uri("http://127.0.0.1:9000"), "us-east-1", new BasicAWSCredentials("k", "s"));
    private static readonly S3Settings Anonymous = new(null, "us-east-1", null);

    [Fact]
    public void SigV4MatchesTheAwsDocumentationExample()
    {
        // "GET Bucket Lifecycle" example of the S3 SigV4 documentation (header-based auth).
        using var request = new HttpRequestMessage(HttpMethod.Get, "https://examplebucket.s3.amazonaws.com/?lifecycle");
        var credentials = new ImmutableCredentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", null);
        SigV4Signer.Sign(request, credentials, "us-east-1", new DateTime(2013, 5, 24, 0, 0, 0, DateTimeKind.Utc));
        Assert.Equal("AWS4-HMAC-SHA256", request.Headers.Authorization!.Scheme);
        Assert.Equal("Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, " +
                     "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543", request.Headers.Authorization.Parameter);
    }

    [Fact]
    public void S3UrlGoesToTheEndpointPathStyle()
    {
        var location = ObjectLocation.Resolve("s3://models/v1/dir/a b+c.bin", Local);
        Assert.True(location.Signed);
        Assert.Equal("http://127.0.0.1:9000/models/v1/dir/a%20b%2Bc.bin", location.RequestUri.AbsoluteUri);
        Assert.Equal("s3://models/v1/dir/a b+c.bin", location.Display);
    }

    [Fact]
    public void S3UrlWithoutEndpointGoesToAwsVirtualHosted()
    {
        var location = ObjectLocation.Resolve("s3://models/v1/a.bin", Aws);
        Assert.Equal("https://models.s3.us-east-1.amazonaws.com/v1/a.bin", location.RequestUri.AbsoluteUri);
        Assert.True(location.Signed);
    }

    [Fact]
    public void AwsHttpsUrlIsSignedAndRedirectedToAnEndpoint()
    {
        var location = ObjectLocation.Resolve("https://my-models.s3.amazonaws.com/distilbert/v1/config.json", Local);
        Assert.True(location.Signed);
        Assert.Equal("http://127.0.0.1:9000/my-models/distilbert/v1/config.json", location.RequestUri.AbsoluteUri);
        var pathStyle = ObjectLocation.Resolve("https://s3.eu-west-1.amazonaws.com/bucket/k/x.bin", Aws);
        Assert.Equal("https://bucket.s3.us-east-1.amazonaws.com/k/x.bin", pathStyle.RequestUri.AbsoluteUri);
    }

    [Fact]
    public void PresignedUrlIsUnsignedAndItsQueryNeverDisplayed()
    {
        const string url = "https://bucket.s3.amazonaws.com/a.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeef";
        var location = ObjectLocation.Resolve(url, Aws);
        Assert.False(location.Signed);
        Assert.Equal(url, location.RequestUri.OriginalString);
        Assert.DoesNotContain("Signature", location.Display);
        Assert.DoesNotContain("deadbeef", location.Display);
        Assert.DoesNotContain("AKIA", location.Display);
    }

    [Fact]
    public void PublicUrlWithoutCredentialsIsPlain()
    {
        var location = ObjectLocation.Resolve("https://example.org/models/a.bin", Anonymous);
        Assert.False(location.Signed);
        var aws = ObjectLocation.Resolve("https://bucket.s3.amazonaws.com/a.bin", Anonymous);
        Assert.False(aws.Signed);
    }

    /// <summary>
    /// A whole-object read (manifests, signatures) is bounded whether or not the server announces a length:
    /// a chunked body that runs past the bound is cut off, never buffered whole.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AWholeObjectReadStopsAtItsBound(bool chunked)
    {
        byte[] body = new byte[100_000];
        Random.Shared.NextBytes(body);
        await using var server = await OneAnswerServer.StartAsync(body, chunked);
        using var store = new HttpObjectStore(Anonymous);
        var location = ObjectLocation.Resolve($"http://127.0.0.1:{server.Port}/m.json", Anonymous);

        var refused = await Assert.ThrowsAsync<ObjectStoreException>(() => store.GetObjectAsync(location, 50_000, CancellationToken.None));
        Assert.Equal(ObjectStoreErrorKind.TooLarge, refused.Kind);
        Assert.Contains("larger than the limit of 50000 bytes", refused.Message);
        Assert.Equal(body, await store.GetObjectAsync(location, body.Length, CancellationToken.None));
        Assert.Null(await store.GetObjectAsync(ObjectLocation.Resolve($"http://127.0.0.1:{server.Port}/missing", Anonymous), 10, CancellationToken.None));
    }

    /// <summary>Answers GET /m.json with the body (with Content-Length or chunked) and anything else with 404, one connection at a time.</summary>
    private sealed class OneAnswerServer : IAsyncDisposable
    {
        private readonly System.Net.Sockets.TcpListener _listener = new(System.Net.IPAddress.Loopback, 0);
        private readonly CancellationTokenSource _stop = new();
        private Task _loop = Task.CompletedTask;
        public int Port => ((System.Net.IPEndPoint)_listener.LocalEndpoint).Port;

        public static Task<OneAnswerServer> StartAsync(byte[] body, bool chunked)
        {
            var server = new OneAnswerServer();
            server._listener.Start();
            server._loop = server.ServeAsync(body, chunked);
            return Task.FromResult(server);
        }

        private async Task ServeAsync(byte[] body, bool chunked)
        {
            try
            {
                while (true)
                {
                    using var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                    try { await AnswerAsync(client, body, chunked); }
                    catch (IOException) { } // the client went away: the next one
                }
            }
            catch (OperationCanceledException) { }
        }

        private async Task AnswerAsync(System.Net.Sockets.TcpClient client, byte[] body, bool chunked)
        {
            await using var stream = client.GetStream();
            var reader = new StreamReader(stream, leaveOpen: true);
            string? line = await reader.ReadLineAsync(_stop.Token);
            while (!string.IsNullOrEmpty(await reader.ReadLineAsync(_stop.Token))) { } // headers
            bool found = line?.StartsWith("GET /m.json ", StringComparison.Ordinal) == true;
            string head = !found ? "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                : chunked ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                : $"HTTP/1.1 200 OK\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n";
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head), _stop.Token);
            if (!found) return;
            try
            {
                if (!chunked) await stream.WriteAsync(body, _stop.Token);
                else
                {
                    for (int at = 0; at < body.Length; at += 8192)
                    {
                        int n = Math.Min(8192, body.Length - at);
                        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"{n:x}\r\n"), _stop.Token);
                        await stream.WriteAsync(body.AsMemory(at, n), _stop.Token);
                        await stream.WriteAsync("\r\n"u8.ToArray(), _stop.Token);
                    }
                    await stream.WriteAsync("0\r\n\r\n"u8.ToArray(), _stop.Token);
                }
            }
            catch (IOException) { } // the client stopped reading at its bound
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            _listener.Stop();
            await _loop;
            _stop.Dispose();
        }
    }
}
