using System.Diagnostics;

namespace MlArtifactFs.Fetching;

/// <summary>
/// What storage's link looks like from here, learnt from the GETs themselves: the time to a GET's first
/// byte (a round trip plus the server's work) and the rate one connection carries after it (moving
/// averages). It decides how many parallel parts a cold chunk that a reader waits on is fetched in: as
/// many as make the chunk's transfer take no more than a quarter of a round trip, so its first byte comes
/// about as soon as one small GET's would (<see cref="FetcherOptions.DemandChunkParts"/> 0 = this).
/// On loopback a round trip costs nothing and a chunk goes in one piece; through S3's 30 ms and 80 MB/s
/// per connection, a 1 MiB chunk goes in two.
/// </summary>
internal sealed class LinkEstimate
{
    /// <summary>A GET smaller than this after its first byte says little about the rate.</summary>
    private const long MinRateSample = 512 << 10;
    private const double Weight = 0.2; // of each new sample in the moving averages
    private const int MaxParts = 8;

    private readonly Lock _lock = new();
    private double _ttfb;   // seconds; guarded by _lock
    private double _rate;   // bytes per second, one connection; guarded by _lock

    /// <summary>One GET: when it was sent, when its first byte came, when its last did, and how many bytes.</summary>
    public void Record(long sent, long firstByte, long lastByte, long bytes, long firstRead)
    {
        double ttfb = Stopwatch.GetElapsedTime(sent, firstByte).TotalSeconds;
        double transfer = Stopwatch.GetElapsedTime(firstByte, lastByte).TotalSeconds;
        lock (_lock)
        {
            _ttfb = _ttfb == 0 ? ttfb : _ttfb + Weight * (ttfb - _ttfb);
            if (bytes - firstRead >= MinRateSample && transfer > 0)
            {
                double rate = (bytes - firstRead) / transfer;
                _rate = _rate == 0 ? rate : _rate + Weight * (rate - _rate);
            }
        }
    }

    /// <summary>Parts for a chunk of <paramref name="length"/> bytes a reader waits on (1 until a rate was measured).</summary>
    public int PartsFor(int length, int minPart)
    {
        double ttfb, rate;
        lock (_lock) (ttfb, rate) = (_ttfb, _rate);
        if (rate <= 0 || ttfb <= 0) return 1;
        double perConnectionInAQuarterRoundTrip = rate * ttfb / 4;
        int parts = (int)Math.Ceiling(length / perConnectionInAQuarterRoundTrip);
        return Math.Clamp(Math.Min(parts, length / minPart), 1, MaxParts);
    }

    public override string ToString()
    {
        lock (_lock) return $"first byte {_ttfb * 1000:0.#} ms, {_rate / 1e6:0} MB/s per connection";
    }
}
