using System.Buffers;
using System.Runtime.CompilerServices;
using MlArtifactFs.Cache;

namespace MlArtifactFs.Reading;

/// <summary>
/// The tensor layouts of the model files being read, found once per blob and shared by its readers. A
/// file is looked at only once a reader has read its start (loaders read the header first), and parsed
/// off the read path from verified bytes already in the cache: a header is never fetched for this alone.
/// </summary>
internal sealed class TensorLayouts
{
    /// <summary>Files smaller than this gain nothing from tensor read-ahead.</summary>
    private const long MinFileSize = 16L << 20;

    /// <summary>GGUF headers show their length only while parsing: tries with a growing verified prefix.</summary>
    private const int MaxAttempts = 8;

    private sealed class State
    {
        public int Busy;                // a look or a parse is running
        public volatile bool Done;      // Layout is final (null: not a model file, or not one we can use)
        public TensorLayout? Layout;
        public long ParsedPrefix;       // the prefix the last attempt had
        public int Attempts;
    }

    private readonly ConditionalWeakTable<CachedBlob, State> _states = new();

    /// <summary>The layout, once known; null while unknown and for other files.</summary>
    public TensorLayout? TryGet(CachedBlob blob) => _states.TryGetValue(blob, out var s) && s.Done ? s.Layout : null;

    /// <summary>After a READ: looks at the file's start when it is there, and parses its header in the background.</summary>
    public void Observe(CachedBlob blob)
    {
        var d = blob.Descriptor;
        if (d.Size < MinFileSize) return;
        var state = _states.GetOrCreateValue(blob);
        if (state.Done || Volatile.Read(ref state.Busy) != 0) return;
        long prefix = ServablePrefix(blob, TensorLayout.MaxHeaderBytes);
        if (prefix < 16 || prefix <= state.ParsedPrefix) return;
        if (Interlocked.Exchange(ref state.Busy, 1) != 0) return;
        _ = Task.Run(() =>
        {
            try { Look(blob, state, prefix); }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                state.Done = true; // the blob went away or its file failed: no read-ahead for it, reads go on
            }
            finally { Volatile.Write(ref state.Busy, 0); }
        });
    }

    private static void Look(CachedBlob blob, State state, long prefix)
    {
        long size = blob.Descriptor.Size;
        Span<byte> start = stackalloc byte[16];
        if (blob.Read(0, start) < 16) return;
        switch (TensorLayout.Recognize(start, size, out long headerBytes))
        {
            case TensorLayout.Probe.NotAModel:
                state.Done = true;
                return;
            case TensorLayout.Probe.NeedsMore:
                return;
        }
        long have = Math.Min(prefix, headerBytes);
        if (have < headerBytes && start[..4].SequenceEqual("GGUF"u8) is false) return; // safetensors: wait for the whole header
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)have);
        try
        {
            int n = blob.Read(0, buffer.AsSpan(0, (int)have));
            var layout = TensorLayout.Parse(buffer.AsSpan(0, n), size);
            state.ParsedPrefix = have;
            if (layout is not null || have >= headerBytes || ++state.Attempts >= MaxAttempts)
            {
                state.Layout = layout;
                state.Done = true;
            }
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>How many bytes from the file's start are verified and may be read (at most <paramref name="limit"/>).</summary>
    private static long ServablePrefix(CachedBlob blob, long limit)
    {
        var d = blob.Descriptor;
        if (blob.IsComplete) return Math.Min(d.Size, limit);
        long end = 0;
        for (int c = 0; c < d.ChunkCount && end < limit && blob.IsServable(c); c++) end = d.ChunkEnd(c);
        return Math.Min(end, limit);
    }
}
