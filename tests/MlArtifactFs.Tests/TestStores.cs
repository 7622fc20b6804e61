using MlArtifactFs.Storage;

namespace MlArtifactFs.Tests;

public enum Fault { None, ServiceUnavailable, NotFound, Forbidden, TruncatedBody, ConnectionReset, FlippedByte, Stall }

/// <summary>
/// An in-memory object store for unit tests of the fetcher: counts calls and bytes, injects a fault
/// per call (mountpoint-s3's failure client), and can hold a body after N bytes until released.
/// </summary>
public sealed class MemoryObjectStore : IObjectStore
{
    private readonly Dictionary<string, byte[]> _objects = new(StringComparer.Ordinal);
    private int _calls;
    private long _bytesServed;

    public Func<int, Fault> Faults { get; set; } = _ => Fault.None;
    /// <summary>Each body pauses after this many bytes until <see cref="Release"/> completes.</summary>
    public long? PauseAfter { get; set; }
    public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public TaskCompletionSource Paused { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int Calls => Volatile.Read(ref _calls);
    public long BytesServed => Interlocked.Read(ref _bytesServed);
    public List<(long Offset, long Length)> Requests { get; } = [];

    public ObjectLocation Put(string name, byte[] bytes)
    {
        _objects[name] = bytes;
        return new ObjectLocation(new Uri("http://memory/" + name), false, null, null, name);
    }

    public Task<Stream> OpenRangeAsync(ObjectLocation location, long offset, long length, CancellationToken cancel)
    {
        int call = Interlocked.Increment(ref _calls);
        lock (Requests) Requests.Add((offset, length));
        if (!_objects.TryGetValue(location.Display, out var bytes))
            throw new ObjectStoreException(ObjectStoreErrorKind.NotFound, $"GET {location.Display}: HTTP 404 NoSuchKey", 404);
        var fault = Faults(call);
        switch (fault)
        {
            case Fault.ServiceUnavailable: throw new ObjectStoreException(ObjectStoreErrorKind.Transient, $"GET {location.Display}: HTTP 503 SlowDown", 503);
            case Fault.NotFound: throw new ObjectStoreException(ObjectStoreErrorKind.NotFound, $"GET {location.Display}: HTTP 404", 404);
            case Fault.Forbidden: throw new ObjectStoreException(ObjectStoreErrorKind.AccessDenied, $"GET {location.Display}: HTTP 403 AccessDenied", 403);
        }
        var body = bytes.AsSpan((int)offset, (int)length).ToArray();
        if (fault == Fault.FlippedByte) body[body.Length / 2] ^= 0x40;
        return Task.FromResult<Stream>(new Body(this, body, fault));
    }

    private sealed class Body(MemoryObjectStore store, byte[] bytes, Fault fault) : Stream
    {
        private int _position;
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => bytes.Length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer.AsMemory(offset, count)).AsTask().Result;

        public override async ValueTask<int> ReadAsync(Memory<byte> destination, CancellationToken cancel = default)
        {
            int half = bytes.Length / 2;
            if (fault is Fault.TruncatedBody && _position >= half) return 0;
            if (fault is Fault.ConnectionReset && _position >= half) throw new IOException("Connection reset by peer");
            if (fault is Fault.Stall && _position >= half) await Task.Delay(Timeout.Infinite, cancel);
            if (store.PauseAfter is { } pause && _position >= pause)
            {
                store.Paused.TrySetResult();
                await store.Release.Task.WaitAsync(cancel);
            }
            int limit = bytes.Length;
            if (fault is Fault.TruncatedBody or Fault.ConnectionReset or Fault.Stall) limit = half; // then the fault, on the next read
            if (store.PauseAfter is { } p && _position < p) limit = (int)Math.Min(limit, p);
            int n = Math.Min(destination.Length, limit - _position);
            if (n <= 0) return 0;
            bytes.AsSpan(_position, n).CopyTo(destination.Span);
            _position += n;
            Interlocked.Add(ref store._bytesServed, n);
            return n;
        }
    }
}
