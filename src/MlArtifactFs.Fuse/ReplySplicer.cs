using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using MlArtifactFs.Fuse.Interop;
using MlArtifactFs.Fuse.Protocol;

namespace MlArtifactFs.Fuse;

/// <summary>
/// Answers READs whose bytes lie in a file (<see cref="ReadResult.FileRange"/>) by splicing: the reply
/// header is written into a pipe, the data spliced from the file behind it (page references, no copy),
/// and the whole reply spliced into /dev/fuse, where the kernel copies it once into the reader's pages.
/// Pipes are pooled, so a READ answered on any thread (a hit on a reader thread, a miss on the thread
/// that completed its fetch) can splice. Any failure sends nothing: the caller answers by copy, and
/// EINVAL from the kernel turns splicing off for the session.
/// </summary>
internal sealed unsafe class ReplySplicer(ILogger logger)
{
    private sealed class Pipe
    {
        public int Read = -1, Write = -1, Bytes;
    }

    private readonly ConcurrentBag<Pipe> _pipes = [];
    private bool _enabled = true;
    private long _limit = long.MaxValue; // the largest pipe we may have: lowered once F_SETPIPE_SZ is refused (not root)
    private long _spliced;

    /// <summary>READs answered by splicing.</summary>
    public long Spliced => Interlocked.Read(ref _spliced);

    /// <summary>
    /// Sends the reply to <paramref name="unique"/> with <paramref name="length"/> bytes of
    /// <paramref name="sourceFd"/> at <paramref name="offset"/>. True when it was sent (or the request
    /// was interrupted meanwhile: nobody waits for it); false when nothing was sent.
    /// </summary>
    public bool TrySend(int fuseFd, ulong unique, int sourceFd, long offset, int length)
    {
        if (!Volatile.Read(ref _enabled)) return false;
        if (!_pipes.TryTake(out var pipe)) pipe = new Pipe();
        int header = sizeof(FuseOutHeader);
        // Pipe slots: one for the header, one per page of data (one more when the offset is not page-aligned).
        if (!Ensure(pipe, (2 + ((long)length + 4095) / 4096) * 4096)) return Keep(pipe, false);
        var reply = new FuseOutHeader { Len = (uint)(header + length), Unique = unique };
        if (Libc.Write(pipe.Write, (byte*)&reply, header) != header) return Abandon(pipe);
        long at = offset;
        for (int moved = 0; moved < length;)
        {
            nint n = Libc.Splice(sourceFd, &at, pipe.Write, null, (nuint)(length - moved), 0);
            if (n <= 0) return Abandon(pipe); // EOF, a full pipe (non-blocking), or an error: nothing went to the kernel
            moved += (int)n;
        }
        nint sent;
        do sent = Libc.Splice(pipe.Read, null, fuseFd, null, (nuint)(header + length), 0);
        while (sent < 0 && Libc.LastErrno == Libc.EINTR);
        if (sent == header + length)
        {
            Interlocked.Increment(ref _spliced);
            return Keep(pipe, true);
        }
        int errno = sent < 0 ? Libc.LastErrno : 0;
        Abandon(pipe);
        if (errno == Libc.ENOENT) return true; // interrupted meanwhile: nobody waits for an answer
        if (errno == Libc.EINVAL && Interlocked.Exchange(ref _enabled, false))
            logger.LogInformation("the kernel refused a spliced READ reply (EINVAL); answering READs by copy");
        return false;
    }

    private bool Keep(Pipe pipe, bool result)
    {
        _pipes.Add(pipe);
        return result;
    }

    /// <summary>A non-blocking pipe able to hold <paramref name="bytes"/> (root may exceed pipe-max-size).</summary>
    private bool Ensure(Pipe pipe, long bytes)
    {
        if (pipe.Read < 0)
        {
            int* fds = stackalloc int[2];
            if (Libc.Pipe2(fds, Libc.O_CLOEXEC | Libc.O_NONBLOCK) != 0) return false;
            (pipe.Read, pipe.Write, pipe.Bytes) = (fds[0], fds[1], Libc.Fcntl(fds[1], Libc.F_GETPIPE_SZ, 0));
        }
        if (pipe.Bytes >= bytes) return true;
        if (bytes > Interlocked.Read(ref _limit)) return false; // refused before: not asked again
        int size = Libc.Fcntl(pipe.Write, Libc.F_SETPIPE_SZ, (int)Math.Min(bytes, 16 << 20));
        if (size > 0) pipe.Bytes = size;
        else
        {
            // Not root: at most pipe-max-size (1 MiB by default), enough for READs a little under 1 MiB.
            size = Libc.Fcntl(pipe.Write, Libc.F_SETPIPE_SZ, 1 << 20);
            if (size > 0) pipe.Bytes = size;
            Interlocked.Exchange(ref _limit, pipe.Bytes);
        }
        return pipe.Bytes >= bytes;
    }

    /// <summary>Drops a pipe that may hold part of a reply (a fresh one is made next time); returns false.</summary>
    private static bool Abandon(Pipe pipe)
    {
        if (pipe.Read >= 0)
        {
            Libc.Close(pipe.Read);
            Libc.Close(pipe.Write);
        }
        return false;
    }

    public void Dispose()
    {
        while (_pipes.TryTake(out var pipe)) Abandon(pipe);
    }
}
