using System.Collections.Concurrent;
using MlArtifactFs.Fuse;

namespace MlArtifactFs.Cache;

/// <summary>
/// Chunks of a blob served from the memory they were verified in: from the moment they verified
/// (before their write to the shared file has landed, so readers never wait for the disk) and, once
/// stored, for as long as the <see cref="ChunkMemory"/> budget can keep them resident (so nothing is
/// read back from the file while it is still in memory; with O_DIRECT writes the file's pages are not
/// in the page cache at all). A failed write leaves the entry marked failed, so a reader that saw the
/// chunk servable gets an error, never the unwritten disk.
/// <para>Lock order: an entry's lock is never held while calling into the pool.</para>
/// </summary>
internal sealed class StagedChunks
{
    private sealed class Entry(StagedChunks owner, int chunk) : ChunkMemory.Resident, IReadLease
    {
        public readonly int Chunk = chunk;
        public readonly Lock Lock = new();
        public ReadOnlyMemory<byte> Bytes; // guarded by Lock; empty once gone
        public ChunkBuffer? Buffer;        // guarded by Lock; owned: given back when the entry goes and nobody borrows it
        public bool Failed;                // guarded by Lock
        public bool Stored;                // guarded by Lock
        public int Borrowers;              // guarded by Lock: replies being written from Buffer right now
        public ChunkBuffer? Parting;       // guarded by Lock: gone while borrowed; given back by the last borrower

        public override void Release() => owner.Drop(this);

        /// <summary>A reply written from this chunk's memory was sent.</summary>
        public void Return()
        {
            ChunkBuffer? parting = null;
            lock (Lock)
            {
                if (--Borrowers == 0) (parting, Parting) = (Parting, null);
            }
            parting?.Dispose();
        }
    }

    private readonly ConcurrentDictionary<int, Entry> _entries = new();

    public bool IsEmpty => _entries.IsEmpty;

    /// <summary>
    /// Serves <paramref name="bytes"/> for the chunk from now on. With <paramref name="buffer"/> (the memory
    /// the bytes lie in) the entry owns it and gives it back when it goes; without, the caller keeps its
    /// memory until <see cref="Stored"/> or <see cref="Failed"/>.
    /// </summary>
    public void Stage(int chunk, ReadOnlyMemory<byte> bytes, ChunkBuffer? buffer)
    {
        var entry = new Entry(this, chunk) { Bytes = bytes, Buffer = buffer };
        Entry? replaced = null;
        _entries.AddOrUpdate(chunk, entry, (_, old) => { replaced = old; return entry; });
        if (replaced is not null) Drop(replaced, removeFromMap: false); // a resident copy of a chunk stored again
    }

    /// <summary>
    /// Copies [offsetInChunk, +destination.Length) of a chunk held in memory; false when it is not (any
    /// more): it is on disk. Throws when its write failed.
    /// </summary>
    public bool TryCopy(int chunk, int offsetInChunk, Span<byte> destination, string dataPath)
    {
        if (!_entries.TryGetValue(chunk, out var entry)) return false;
        ChunkMemory? pool;
        lock (entry.Lock)
        {
            if (entry.Failed) throw new IOException($"{dataPath}: chunk {chunk} verified but could not be stored; it is fetched again");
            if (entry.Bytes.IsEmpty) return false;
            entry.Bytes.Span.Slice(offsetInChunk, destination.Length).CopyTo(destination);
            pool = entry.Stored && offsetInChunk + destination.Length == entry.Bytes.Length ? entry.Buffer?.Pool : null;
        }
        pool?.MarkConsumed(entry); // read to its end: the first to go when memory is needed
        return true;
    }

    /// <summary>
    /// Lends [offsetInChunk, +length) of a chunk held in memory for a reply to be written from it, without
    /// a copy: the memory stays valid until <paramref name="lease"/> is returned, even if the chunk goes
    /// meanwhile. False when the chunk is not in memory (or not in memory of ours to lend).
    /// </summary>
    public unsafe bool TryBorrow(int chunk, int offsetInChunk, int length, string dataPath, out nint address, out IReadLease? lease)
    {
        address = 0;
        lease = null;
        if (!_entries.TryGetValue(chunk, out var entry)) return false;
        ChunkMemory? pool;
        lock (entry.Lock)
        {
            if (entry.Failed) throw new IOException($"{dataPath}: chunk {chunk} verified but could not be stored; it is fetched again");
            if (entry.Bytes.IsEmpty || entry.Buffer is null) return false;
            entry.Borrowers++;
            address = (nint)(entry.Buffer.Pointer + offsetInChunk);
            lease = entry;
            pool = entry.Stored && offsetInChunk + length == entry.Bytes.Length ? entry.Buffer.Pool : null;
        }
        pool?.MarkConsumed(entry);
        return true;
    }

    /// <summary>The chunk is on disk now: with an owned buffer it stays resident (the pool may take it back), without one it goes.</summary>
    public void Stored(int chunk)
    {
        if (!_entries.TryGetValue(chunk, out var entry)) return;
        ChunkMemory? pool;
        lock (entry.Lock)
        {
            entry.Stored = true;
            pool = entry.Buffer?.Pool;
        }
        if (pool is null) Drop(entry);
        else pool.AddResident(entry);
    }

    /// <summary>The write failed: the entry stays, marked failed; its memory goes.</summary>
    public void Failed(int chunk)
    {
        if (!_entries.TryGetValue(chunk, out var entry)) return;
        ChunkBuffer? buffer;
        lock (entry.Lock)
        {
            entry.Failed = true;
            entry.Bytes = default;
            buffer = Part(entry);
        }
        buffer?.Dispose();
    }

    /// <summary>The chunk was evicted: its memory goes too (a reply being written from it keeps it until sent).</summary>
    public void Evict(int chunk)
    {
        if (_entries.TryGetValue(chunk, out var entry)) Drop(entry);
    }

    /// <summary>Lets every chunk's memory go (the blob is closing).</summary>
    public void Clear()
    {
        foreach (var entry in _entries.Values) Drop(entry);
    }

    private void Drop(Entry entry, bool removeFromMap = true)
    {
        ChunkBuffer? buffer;
        ChunkMemory? pool;
        lock (entry.Lock)
        {
            entry.Bytes = default;
            pool = entry.Buffer?.Pool;
            buffer = Part(entry);
        }
        pool?.RemoveResident(entry);
        if (removeFromMap) _entries.TryRemove(new KeyValuePair<int, Entry>(entry.Chunk, entry));
        buffer?.Dispose();
    }

    /// <summary>Takes the entry's buffer away (under its lock): to give back now, or (null) by the last borrower.</summary>
    private static ChunkBuffer? Part(Entry entry)
    {
        var buffer = entry.Buffer;
        entry.Buffer = null;
        if (entry.Borrowers == 0) return buffer;
        entry.Parting = buffer;
        return null;
    }
}
