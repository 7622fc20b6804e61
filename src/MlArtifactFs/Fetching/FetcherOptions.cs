namespace MlArtifactFs.Fetching;

public sealed record FetcherOptions
{
    /// <summary>
    /// Ranged GETs in flight at once, all files together. One S3 connection streams ~100 MB/s
    /// (AWS guidance); 8 parallel ranges saturate a 10 Gb/s NIC within reason and keep buffer
    /// memory at 8 × <see cref="BufferSize"/>.
    /// </summary>
    public int MaxConcurrentFetches { get; init; } = 8;

    /// <summary>Largest single GET: the seed's 16 MiB. Big enough to amortise request latency, small enough to spread across connections.</summary>
    public long MaxRequestBytes { get; init; } = 16L << 20;

    /// <summary>Copy buffer per GET (socket -> cache file).</summary>
    public int BufferSize { get; init; } = 256 << 10;

    /// <summary>Attempts per GET before the waiting reads get EIO (500, 503, resets, truncation, bad bytes).</summary>
    public int MaxAttempts { get; init; } = 6;

    /// <summary>No byte for this long = a stalled connection: abort and retry.</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Backoff: full jitter over base × 2^attempt, capped.</summary>
    public TimeSpan RetryBaseDelay { get; init; } = TimeSpan.FromMilliseconds(100);
    public TimeSpan RetryMaxDelay { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// A reader waiting on a cold chunk (a random read) gets it as this many parallel ranged GETs;
    /// parts are at least 256 KiB. Nothing is served before its whole chunk verifies, so on stores
    /// where one connection is slower than the network (S3: ~100 MB/s per connection) one stream's
    /// rate bounds the first byte, and 4 parts cut that transfer ~4x. Off (1) by default: on a
    /// loopback or CPU-bound server every extra request costs more than it saves (bench/README.md).
    /// </summary>
    public int DemandChunkParts { get; init; } = 1;

    /// <summary>
    /// Memory for chunks, all runs together (<see cref="MlArtifactFs.Cache.ChunkMemory"/>): each chunk is held
    /// whole while it is verified, before it may touch the shared cache. 128 MiB lets the 8 fetches run
    /// at once with chunks of up to 16 MiB; larger chunks (up to 64 MiB) simply run fewer at a time.
    /// </summary>
    public long BufferBudgetBytes { get; init; } = 128L << 20;

    /// <summary>Sequential read-ahead grows from <see cref="MaxRequestBytes"/> by doubling up to this.</summary>
    public long MaxReadAheadBytes { get; init; } = 128L << 20;
}
