namespace Mlfs.Tests.Infrastructure;

public static class Check
{
    /// <summary>Asserts two byte arrays are identical; on failure reports the first differing offset.</summary>
    public static void SameBytes(byte[] expected, byte[] actual, string what)
    {
        if (expected.AsSpan().SequenceEqual(actual)) return;
        int common = Math.Min(expected.Length, actual.Length);
        int first = 0;
        while (first < common && expected[first] == actual[first]) first++;
        Assert.Fail($"{what}: {actual.Length} bytes read, {expected.Length} expected; first difference at offset {first}");
    }
}
