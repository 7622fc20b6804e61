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

    /// <summary>How many bytes differ (a length difference counts as that many): what a test prints and asserts is 0.</summary>
    public static long WrongBytes(byte[] expected, byte[] actual)
    {
        long wrong = Math.Abs(expected.Length - actual.Length);
        for (int i = 0; i < Math.Min(expected.Length, actual.Length); i++)
            if (expected[i] != actual[i]) wrong++;
        return wrong;
    }

    /// <summary>
    /// Polls until <paramref name="condition"/> holds or a minute passed (events the kernel delivers
    /// asynchronously, such as RELEASE after close(), on a slow machine); returns whether it held.
    /// </summary>
    public static async Task<bool> EventuallyAsync(Func<bool> condition, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromMinutes(1));
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) return false;
            await Task.Delay(20);
        }
        return true;
    }
}
