using BenchmarkDotNet.Running;
using MlArtifactFs.Fuse;

namespace MlArtifactFs.Benchmarks;

/// <summary>
///   micro [BenchmarkDotNet args]     parse/dispatch and verification microbenchmarks (MemoryDiagnoser)
///   serve-memory MOUNTPOINT BYTES    mount one in-memory file (data.bin) until SIGTERM, for dd through FUSE
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
        Console.Error.WriteLine("usage: micro [args] | serve-memory MOUNTPOINT BYTES");
        return 2;
    }
}
