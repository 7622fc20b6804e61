using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using MlArtifactFs.Fuse.Interop;

namespace Mlfs;

/// <summary>
/// NativeAOT compiles for one instruction set, and .NET cannot choose vector widths at run time in such
/// a binary. scripts/build.sh therefore ships two: <c>mlfs</c> for any x86-64 server (x86-64-v2) and
/// <c>mlfs-avx512</c> beside it (x86-64-v4). BLAKE3, the chunk hash mlfs writes by default, runs four
/// times faster with AVX-512 (measured here with `MlArtifactFs.Benchmarks hash-cpu`, both builds AOT:
/// 1.60 against 0.39 CPU s/GiB; a cold read's daemon CPU 2.66 s/GiB with SHA-256 against 1.76 with BLAKE3). On a CPU with AVX-512, <c>mlfs</c> replaces itself
/// with <c>mlfs-avx512</c> (execv: same pid, arguments and environment) before it does anything else.
/// </summary>
internal static class InstructionSets
{
    public const string Avx512Binary = "mlfs-avx512";

    /// <summary>Execs the AVX-512 build where it pays and exists; returns when this binary should go on.</summary>
    public static void UseTheBestBuild(string[] args)
    {
        if (RuntimeFeature.IsDynamicCodeSupported) return;   // JIT (dotnet tool, tests): the runtime already uses every vector width
        if (Vector512.IsHardwareAccelerated) return;         // this is the AVX-512 build
        if (Environment.GetEnvironmentVariable("MLFS_NO_AVX512") == "1" || !CpuHasX86_64V4()) return;
        if (Environment.ProcessPath is not { } self || Path.GetDirectoryName(self) is not { } dir) return;
        string target = Path.Combine(dir, Avx512Binary);
        if (!File.Exists(target)) return;
        var strings = new List<nint>(args.Length + 1) { Marshal.StringToCoTaskMemUTF8(target) };
        foreach (var arg in args) strings.Add(Marshal.StringToCoTaskMemUTF8(arg));
        Libc.Execv(target, [.. strings, 0]);
        foreach (var s in strings) Marshal.FreeCoTaskMem(s); // exec failed: go on in this binary
    }

    /// <summary>What x86-64-v4 requires, as the kernel reports it (it clears flags the OS does not enable).</summary>
    private static bool CpuHasX86_64V4()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/cpuinfo"))
            {
                if (!line.StartsWith("flags", StringComparison.Ordinal)) continue;
                var flags = new HashSet<string>(line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries), StringComparer.Ordinal);
                return flags.IsSupersetOf(["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"]);
            }
        }
        catch (IOException) { }
        return false;
    }
}
