using BenchmarkDotNet.Running;
using MlArtifactFs.Cache;
using MlArtifactFs.Fuse;

namespace MlArtifactFs.Benchmarks;

/// <summary>
///   micro [BenchmarkDotNet args]     parse/dispatch and verification microbenchmarks (MemoryDiagnoser)
///   serve-memory MOUNTPOINT BYTES    mount one in-memory file (data.bin) until SIGTERM, for dd through FUSE
///   hash-cpu FILE sha256|blake3      CPU seconds per GiB of the daemon's chunk hash alone over FILE's bytes
///                                    (1 MiB chunks, one thread, best of three passes over the bytes in memory)
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args.Length >= 1 && args[0] == "micro")
        {
            BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args[1..]);
            return 0;
        }
        if (args.Length == 3 && args[0] == "serve-memory")
        {
            using var stop = new ManualResetEventSlim();
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(
                System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; stop.Set(); });
            using var session = FuseSession.Mount(new MemoryFileSystem(long.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture)),
                new FuseMountOptions { MountPoint = args[1], FsName = "mlfs-bench" });
            Console.WriteLine("ready");
            stop.Wait();
            return 0;
        }
        if (args.Length == 3 && args[0] == "hash-cpu" && ChunkHashing.TryParseName(args[2], out var algorithm))
        {
            Console.WriteLine(HashCpuSecondsPerGiB(args[1], algorithm).ToString("0.000", System.Globalization.CultureInfo.InvariantCulture));
            return 0;
        }
        Console.Error.WriteLine("usage: micro [args] | serve-memory MOUNTPOINT BYTES | hash-cpu FILE sha256|blake3");
        return 2;
    }

    /// <summary>The hash the daemon runs on every chunk it fetches (ChunkHashing.Compute), alone: the reference the daemon's CPU per GiB is compared with.</summary>
    private static double HashCpuSecondsPerGiB(string path, ChunkHashAlgorithm algorithm)
    {
        byte[] bytes = File.ReadAllBytes(path);
        Span<byte> digest = stackalloc byte[ChunkHashing.DigestSize];
        const int Chunk = 1 << 20;
        double best = double.MaxValue;
        for (int pass = 0; pass < 3; pass++) // the first pass over freshly read memory costs more on some machines: the best of three
        {
            var before = System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime;
            for (int offset = 0; offset < bytes.Length; offset += Chunk)
                ChunkHashing.Compute(algorithm, bytes.AsSpan(offset, Math.Min(Chunk, bytes.Length - offset)), digest);
            double seconds = (System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime - before).TotalSeconds;
            best = Math.Min(best, seconds / (bytes.Length / (double)(1L << 30)));
        }
        return best;
    }
}
