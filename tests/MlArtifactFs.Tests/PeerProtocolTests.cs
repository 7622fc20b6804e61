using MlArtifactFs.Fleet;

namespace MlArtifactFs.Tests;

/// <summary>The peer server's parsing of what a client sends: chunk ids and ranges (input, from the network).</summary>
public sealed class PeerProtocolTests
{
    [Theory]
    [InlineData("bytes=0-99", 1000, 0, 99)]
    [InlineData("bytes=900-", 1000, 900, 999)]
    [InlineData("bytes=-100", 1000, 900, 999)]
    [InlineData("bytes=-5000", 1000, 0, 999)]
    [InlineData("bytes=10-5000", 1000, 10, 999)]
    public void RangesInsideTheChunkParse(string header, long length, long from, long to)
    {
        Assert.True(PeerServer.TryParseRange(header, length, out long f, out long t));
        Assert.Equal((from, to), (f, t));
    }

    [Theory]
    [InlineData("bytes=1000-1001")]   // starts past the end
    [InlineData("bytes=5-4")]         // backwards
    [InlineData("bytes=0-1,5-6")]     // several ranges
    [InlineData("bytes=-0")]
    [InlineData("bytes=+1-2")]
    [InlineData("items=0-1")]
    [InlineData("bytes=a-b")]
    [InlineData("bytes=99999999999999999999-")]
    public void OtherRangesAreRefused(string header) => Assert.False(PeerServer.TryParseRange(header, 1000, out _, out _));

    [Theory]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", true)]
    [InlineData("0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", false)]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde", false)]
    [InlineData("../../../../etc/passwd", false)]
    [InlineData("", false)]
    public void ChunkIdsAreLowercaseSha256Hex(string id, bool valid) => Assert.Equal(valid, PeerServer.IsChunkId(id));

    [Theory]
    [InlineData("10.0.0.5:7070")]
    [InlineData("[fd00::5]:7070")]
    public void PeerEndpointsAreIpAndPort(string text) => Assert.NotNull(FleetOptions.ParseEndPoint(text, "--peer-listen"));

    [Theory]
    [InlineData("node-3.example:7070")]
    [InlineData("10.0.0.5")]
    [InlineData("10.0.0.5:0")]
    public void OtherEndpointsAreRefusedByName(string text) =>
        Assert.Contains("--peer-listen", Assert.Throws<ArgumentException>(() => FleetOptions.ParseEndPoint(text, "--peer-listen")).Message);
}
