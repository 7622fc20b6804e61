using MlArtifactFs.Reading;

namespace MlArtifactFs.Tests;

public class ReadAheadWindowTests
{
    private const long Min = 16 << 20, Max = 128 << 20, Read = 1 << 20;

    [Fact]
    public void SequentialReadsDoubleTheWindowUpToTheCap()
    {
        var w = new ReadAheadWindow(Min, Max);
        var windows = Enumerable.Range(0, 6).Select(i => w.OnRead(i * Read, Read).Length).ToList();
        Assert.Equal([Min, 2 * Min, 4 * Min, Max, Max, Max], windows);
        Assert.Equal(7 * Read, w.OnRead(6 * Read, Read).Offset); // ahead starts where this read ends
    }

    [Fact]
    public void RandomReadsFetchNothingAhead()
    {
        var w = new ReadAheadWindow(Min, Max);
        Assert.Equal(0, w.OnRead(500L << 20, 4096).Length);
        Assert.Equal(0, w.OnRead(7L << 20, 4096).Length);
        Assert.Equal(0, w.OnRead(900L << 20, 4096).Length);
    }

    [Fact]
    public void SlightlyReorderedKernelReadAheadStillCountsAsSequential()
    {
        var w = new ReadAheadWindow(Min, Max);
        w.OnRead(0, Read);
        w.OnRead(2 * Read, Read);           // READ 2 overtook READ 1
        Assert.True(w.OnRead(Read, Read).Length > 0);
        Assert.Equal(0, new ReadAheadWindow(Min, Max).OnRead(100 * Read, Read).Length);
    }

    [Fact]
    public void ARandomJumpResetsTheWindow()
    {
        var w = new ReadAheadWindow(Min, Max);
        for (int i = 0; i < 4; i++) w.OnRead(i * Read, Read);
        Assert.Equal(0, w.OnRead(1000 * Read, Read).Length);
        Assert.Equal(Min, w.OnRead(1001 * Read, Read).Length);
    }
}
