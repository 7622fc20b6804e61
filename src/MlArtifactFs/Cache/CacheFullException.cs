namespace MlArtifactFs.Cache;

/// <summary>The cache's disk is full: nothing was recorded, and readers fall back to uncached reads.</summary>
public sealed class CacheFullException(string message, Exception? inner = null) : IOException(message, inner);

/// <summary>Bytes that do not hash to what the manifest says. Never served, never cached.</summary>
public sealed class ChunkVerificationException(string message) : Exception(message);

/// <summary>A cache path that is not ours to use (a symlink, another user's file, a writable directory).</summary>
public sealed class UnsafeCachePathException(string message) : IOException(message);
