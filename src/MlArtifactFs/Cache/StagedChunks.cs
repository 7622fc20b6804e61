using System.Collections.Concurrent;

namespace MlArtifactFs.Cache;

/// <summary>
/// Chunks that verified in memory a moment ago and are served from the buffer they were verified in
/// until their write to the shared file has landed: readers go on without waiting for the disk, and
/// never read back what is still in memory. A failed write leaves the entry marked failed, so a reader
/// that saw the chunk servable gets an error, never the unwritten disk.
/// </summary>
internal sealed class StagedChunks
{
    private sealed class Entry
    {
        public readonly Lock Lock = new();
        public ReadOnlyMemory<byte> Bytes; // guarded by Lock; empty once stored (or failed)
        public bool Failed;                // guarded by Lock
    }

    private readonly ConcurrentDictionary<int, Entry> _entries = new();

    public bool IsEmpty => _entries.IsEmpty;

    /// <summary>Serves <paramref name="bytes"/> for the chunk until <see cref="Unstage"/> (the caller keeps the buffer until then).</summary>
    public void Stage(int chunk, ReadOnlyMemory<byte> bytes) => _entries[chunk] = new Entry { Bytes = bytes };

    /// <summary>
    /// Copies [offsetInChunk, +destination.Length) of a staged chunk; false when the chunk is not staged
    /// (any more): it is on disk. Throws when its write failed.
    /// </summary>
    public bool TryCopy(int chunk, int offsetInChunk, Span<byte> destination, string dataPath)
    {
        if (!_entries.TryGetValue(chunk, out var entry)) return false;
        lock (entry.Lock)
        {
            if (entry.Failed) throw new IOException($"{dataPath}: chunk {chunk} verified but could not be stored; it is fetched again");
            if (entry.Bytes.IsEmpty) return false;
            entry.Bytes.Span.Slice(offsetInChunk, destination.Length).CopyTo(destination);
            return true;
        }
    }

    /// <summary>The write ended: stored, the entry goes; failed, it stays marked failed. The buffer is free once this returns.</summary>
    public void Unstage(int chunk, bool failed)
    {
        if (!_entries.TryGetValue(chunk, out var entry)) return;
        lock (entry.Lock)
        {
            entry.Failed = failed;
            entry.Bytes = default;
        }
        if (!failed) _entries.TryRemove(new KeyValuePair<int, Entry>(chunk, entry));
    }
}
