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
}
