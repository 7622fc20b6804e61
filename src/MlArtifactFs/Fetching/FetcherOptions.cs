namespace MlArtifactFs.Fetching;

public sealed record FetcherOptions
{
    /// <summary>
    /// Ranged GETs in flight at once, all files together. One S3 connection streams 50-100 MB/s (AWS
    /// guidance: ~85); a link of N × that needs N connections busy. 16: measured through 30 ms round trips
    /// and 40 MB/s per connection, 8 connections reached 0.48 of what 16 parallel GETs of a plain client do
    /// (the link sat idle 24 % of the time). Chunk memory stays bounded by <see cref="BufferBudgetBytes"/>:
    /// a GET holds the chunk it receives and the one being written.
    /// </summary>
    public int MaxConcurrentFetches { get; init; } = 16;

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
    /// A reader waiting on a cold chunk (a random read) gets it as this many parallel ranged GETs; parts
    /// are at least 256 KiB. Nothing is served before its whole chunk verifies, so where one connection is
    /// slower than a round trip is long (S3: ~80 MB/s per connection, 30 ms) one stream's rate bounds the
    /// first byte. 0 (the default): chosen per chunk from the link measured so far (<see cref="LinkEstimate"/>),
    /// so loopback and CPU-bound servers, where every extra request costs more than it saves, get 1.
    /// </summary>
    public int DemandChunkParts { get; init; }

    /// <summary>
    /// Memory for chunks, all runs together (<see cref="MlArtifactFs.Cache.ChunkMemory"/>): each chunk is held
    /// whole while it is verified, before it may touch the shared cache. 128 MiB lets the 8 fetches run
    /// at once with chunks of up to 16 MiB; larger chunks (up to 64 MiB) simply run fewer at a time.
    /// </summary>
    public long BufferBudgetBytes { get; init; } = 128L << 20;

    /// <summary>
    /// Sequential read-ahead grows from <see cref="MaxRequestBytes"/> by doubling up to this: the bytes asked
    /// for ahead of the reader (in flight, or already on disk), not memory. 256 MiB keeps 16 GETs of 16 MiB
    /// in flight (the bandwidth-delay product of 16 connections), where 128 MiB kept at most 8.
    /// </summary>
    public long MaxReadAheadBytes { get; init; } = 256L << 20;
}
