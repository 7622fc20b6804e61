namespace MlArtifactFs.Cache;

/// <summary>
/// A set of chunk indices as a lock-free bitmap with a count. Readers test bits without locks;
/// writers use compare-and-swap, so Add/Remove report whether they changed anything.
/// </summary>
internal sealed class ChunkSet(int chunks)
{
    private readonly ulong[] _bits = new ulong[(chunks + 63) / 64];
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public bool Contains(int chunk) => (Volatile.Read(ref _bits[chunk >> 6]) & (1UL << (chunk & 63))) != 0;

    /// <summary>True when the chunk was not in the set before.</summary>
    public bool Add(int chunk) => Update(chunk, add: true);

    public bool Remove(int chunk) => Update(chunk, add: false);

    /// <summary>The chunks in the set now (a snapshot per 64-chunk word).</summary>
    public IEnumerable<int> Members()
    {
        for (int w = 0; w < _bits.Length; w++)
        {
            ulong word = Volatile.Read(ref _bits[w]);
            while (word != 0)
            {
                int bit = System.Numerics.BitOperations.TrailingZeroCount(word);
                yield return (w << 6) + bit;
                word &= word - 1;
            }
        }
    }

    public void Clear()
    {
        for (int i = 0; i < _bits.Length; i++) Volatile.Write(ref _bits[i], 0);
        Interlocked.Exchange(ref _count, 0);
    }

    private bool Update(int chunk, bool add)
    {
        ulong bit = 1UL << (chunk & 63);
        ref ulong word = ref _bits[chunk >> 6];
        while (true)
        {
            ulong old = Volatile.Read(ref word);
            if (((old & bit) != 0) == add) return false;
            if (Interlocked.CompareExchange(ref word, add ? old | bit : old & ~bit, old) == old)
            {
                Interlocked.Add(ref _count, add ? 1 : -1);
                return true;
            }
        }
    }
}
