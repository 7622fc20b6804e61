using Amazon.Runtime;
using Amazon.Runtime.Credentials;

namespace MlArtifactFs.Storage;

/// <summary>
/// Endpoint, region and credentials for signed requests. Credentials come from the standard AWS
/// chain (environment, shared profile, web identity, container and instance roles) through
/// AWSSDK.Core, which also refreshes temporary ones; we only ever hold the resolver.
/// </summary>
public sealed class S3Settings
{
    private readonly AWSCredentials? _credentials;

    public S3Settings(Uri? endpoint, string? region, AWSCredentials? credentials)
    {
        Endpoint = endpoint;
        Region = string.IsNullOrEmpty(region) ? "us-east-1" : region;
        _credentials = credentials;
    }

    /// <summary>A custom S3-compatible endpoint (MinIO, Swift, ...), addressed path style.</summary>
    public Uri? Endpoint { get; }
    public string Region { get; }
    public bool HasCredentials => _credentials is not null;

    /// <summary>From the environment: <c>--endpoint</c> wins over AWS_ENDPOINT_URL(_S3); region from AWS_REGION / AWS_DEFAULT_REGION.</summary>
    public static S3Settings FromEnvironment(string? endpointOverride = null, bool anonymous = false)
    {
        string? endpoint = endpointOverride
                           ?? Environment.GetEnvironmentVariable("AWS_ENDPOINT_URL_S3")
                           ?? Environment.GetEnvironmentVariable("AWS_ENDPOINT_URL");
        string? region = Environment.GetEnvironmentVariable("AWS_REGION") ?? Environment.GetEnvironmentVariable("AWS_DEFAULT_REGION");
        AWSCredentials? credentials = null;
        if (!anonymous)
        {
            try { credentials = DefaultAWSCredentialsIdentityResolver.GetCredentials(); }
            catch (AmazonClientException) { credentials = null; } // no credentials anywhere: unsigned requests only
        }
        Uri? endpointUri = null;
        if (!string.IsNullOrEmpty(endpoint))
        {
            if (!Uri.TryCreate(endpoint, UriKind.Absolute, out endpointUri) || endpointUri.Scheme is not ("http" or "https"))
                throw new ArgumentException($"endpoint \"{endpoint}\" is not an http(s) URL");
        }
        return new S3Settings(endpointUri, region, credentials);
    }

    /// <summary>The resolved credentials object (for SDK clients); null when none were found.</summary>
    public AWSCredentials? Credentials => _credentials;

    public async ValueTask<ImmutableCredentials?> GetCredentialsAsync()
    {
        if (_credentials is null) return null;
        return await _credentials.GetCredentialsAsync().ConfigureAwait(false);
    }
}
