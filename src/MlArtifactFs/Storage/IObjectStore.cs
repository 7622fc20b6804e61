namespace MlArtifactFs.Storage;

/// <summary>
/// Ranged reads of objects: the one thing the fetcher needs from storage (mountpoint-s3's
/// ObjectClient, reduced). Implementations: <see cref="HttpObjectStore"/> (S3 and plain HTTP),
/// and test stores that count, delay or inject faults.
/// </summary>
public interface IObjectStore
{
    /// <summary>
    /// Starts a GET of [offset, offset+length) and returns the body once headers arrived and were
    /// checked (status, Content-Range, Content-Length). The caller reads exactly <paramref name="length"/>
    /// bytes; fewer means a truncated body (a transient error).
    /// </summary>
    Task<Stream> OpenRangeAsync(ObjectLocation location, long offset, long length, CancellationToken cancel);
}

public enum ObjectStoreErrorKind
{
    /// <summary>Worth retrying: 5xx, 503 SlowDown, connection reset, timeout, truncated body.</summary>
    Transient,
    NotFound,
    AccessDenied,
    /// <summary>The server answered something we cannot use (bad Content-Range, wrong length, HTML with 200).</summary>
    BadResponse,
    /// <summary>The server refused the request itself (4xx such as 400 InvalidBucketName): asking again cannot help.</summary>
    Rejected,
    /// <summary>A whole-object read found the object larger than the caller allows.</summary>
    TooLarge,
}

/// <summary>A storage failure. The message names the object (without query or signature), the range and the status.</summary>
public sealed class ObjectStoreException(ObjectStoreErrorKind kind, string message, int? status = null, Exception? inner = null)
    : Exception(message, inner)
{
    public ObjectStoreErrorKind Kind { get; } = kind;
    public int? Status { get; } = status;
    public bool IsTransient => Kind is ObjectStoreErrorKind.Transient or ObjectStoreErrorKind.BadResponse;
}
