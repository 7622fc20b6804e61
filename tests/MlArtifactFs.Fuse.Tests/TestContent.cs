namespace MlArtifactFs.Fuse.Tests;

/// <summary>Deterministic content: byte = f(seed, offset), so any range can be checked without storing it.</summary>
public static class TestContent
{
    public static byte At(ulong seed, long offset)
    {
        ulong x = (ulong)offset * 0x9E3779B97F4A7C15UL ^ seed;
        x ^= x >> 29;
        x *= 0xBF58476D1CE4E5B9UL;
        x ^= x >> 32;
        return (byte)x;
    }

    public static void Fill(ulong seed, long offset, Span<byte> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = At(seed, offset + i);
    }

    public static byte[] Range(ulong seed, long offset, int length)
    {
        var bytes = new byte[length];
        Fill(seed, offset, bytes);
        return bytes;
    }
}
