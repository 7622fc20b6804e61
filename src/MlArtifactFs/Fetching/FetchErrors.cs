using MlArtifactFs.Cache;
using MlArtifactFs.Storage;
using MlArtifactFs.Telemetry;

namespace MlArtifactFs.Fetching;

/// <summary>Why a fetch run failed, as readers need to know it: which failures have a fallback.</summary>
public enum FetchFailure
{
    /// <summary>Storage refused, failed every attempt, or sent bytes that never verified: EIO.</summary>
    Storage,
    /// <summary>Bytes that verified could not be written: the cache's disk is full. Readers read uncached.</summary>
    CacheFull,
    /// <summary>Bytes that verified could not be stored (a write failed). Readers read uncached.</summary>
    NotStored,
    /// <summary>The mount is stopping.</summary>
    Stopping,
    /// <summary>Anything else (the cache's files, a bug): EIO.</summary>
    Other,
}

/// <summary>A failed fetch, as its readers see it: the kind decides the fallback, the message names file, range and cause.</summary>
public sealed class FetchException(FetchFailure failure, string message, Exception? cause = null) : IOException(message, cause)
{
    public FetchFailure Failure { get; } = failure;

    /// <summary>The disk, not the data, is the problem: the bytes can still be read uncached and verified.</summary>
    public bool CanReadUncached => Failure is FetchFailure.CacheFull or FetchFailure.NotStored;
}

/// <summary>A verified chunk that could not be written: the run fails (its readers read uncached) rather than retry past it.</summary>
internal sealed class ChunkStoreException(string message, Exception inner) : Exception(message, inner);

/// <summary>The one place a fetch's exceptions are described, classified and counted.</summary>
internal static class FetchErrors
{
    public static string Describe(Exception e) => e switch
    {
        ObjectStoreException or ChunkVerificationException or CacheFullException or FetchException or ChunkStoreException => e.Message,
        IOException io => $"connection error ({io.Message})",
        HttpRequestException http => $"connection error ({http.HttpRequestError})",
        OperationCanceledException => "cancelled",
        _ => e.GetType().Name + ": " + e.Message,
    };

    public static FetchFailure Classify(Exception e, bool stopping) => e switch
    {
        _ when stopping => FetchFailure.Stopping,
        CacheFullException => FetchFailure.CacheFull,
        ChunkStoreException => FetchFailure.NotStored,
        ObjectStoreException or ChunkVerificationException or HttpRequestException => FetchFailure.Storage,
        IOException => FetchFailure.Storage, // connection errors surface as IOException
        _ => FetchFailure.Other,
    };

    /// <summary>The error counter (mlfs.errors{kind}) of a failure.</summary>
    public static Counter CounterOf(Exception e) => e switch
    {
        ObjectStoreException { Kind: ObjectStoreErrorKind.NotFound } => Counters.ErrorNotFound,
        ObjectStoreException { Kind: ObjectStoreErrorKind.AccessDenied } => Counters.ErrorAccessDenied,
        ObjectStoreException { Kind: ObjectStoreErrorKind.BadResponse } => Counters.ErrorBadResponse,
        ObjectStoreException { Kind: ObjectStoreErrorKind.Rejected } => Counters.ErrorRejected,
        ObjectStoreException => Counters.ErrorTransient,
        ChunkVerificationException => Counters.ErrorVerification,
        CacheFullException => Counters.ErrorCacheFull,
        _ => Counters.ErrorIo,
    };
}
