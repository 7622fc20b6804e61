using System.CommandLine;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;

namespace Mlfs.Commands;

/// <summary>`mlfs cache info|clear|verify`: look at, empty or check a cache directory (blobs in use by a mount are kept).</summary>
internal static class CacheCommand
{
    public static readonly Option<string?> CacheDir = new("--cache-dir") { Description = "cache directory (default $XDG_CACHE_HOME/mlfs, /var/cache/mlfs as root)" };

    public static Command Create()
    {
        var info = new Command("info", "Show the cache directory, its blobs and the disk they use.") { CacheDir };
        info.SetAction(parse =>
        {
            using var cache = Open(parse);
            var (blobs, bytes) = cache.Usage();
            Console.WriteLine($"cache: {cache.Root}");
            Console.WriteLine($"blobs: {blobs}, {Sizes.Format(bytes)} on disk");
            return ExitCodes.Success;
        });
        var clear = new Command("clear", "Delete every cached blob that no running mount has open.") { CacheDir };
        clear.SetAction(parse =>
        {
            using var cache = Open(parse);
            var (removed, inUse) = cache.Clear();
            Console.WriteLine($"removed {removed} blob(s){(inUse > 0 ? $"; kept {inUse} in use by a running mount" : "")}");
            return ExitCodes.Success;
        });
        var verify = new Command("verify", "Hash every chunk the cache records as verified; exit 6 if any is damaged (reads only).") { CacheDir };
        verify.SetAction(parse =>
        {
            string root = Path.GetFullPath(parse.GetValue(CacheDir) ?? BlobCache.DefaultRoot());
            var result = CacheCheck.Run(root);
            Console.WriteLine($"cache: {root}: {result.Blobs} blob(s), {result.ChunksChecked} chunk(s), {Sizes.Format(result.BytesChecked)} checked, {result.Damaged.Count} damaged");
            foreach (var line in result.Damaged) Console.Error.WriteLine($"damaged: {line}");
            return result.Damaged.Count == 0 ? ExitCodes.Success : ExitCodes.CacheDamaged;
        });
        return new Command("cache", "Inspect, empty or check the local cache.") { info, clear, verify };
    }

    private static BlobCache Open(ParseResult parse) =>
        new(parse.GetValue(CacheDir) ?? BlobCache.DefaultRoot(), long.MaxValue, NullLogger.Instance);
}
