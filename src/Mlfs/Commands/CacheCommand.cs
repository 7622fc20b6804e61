using System.CommandLine;
using Microsoft.Extensions.Logging.Abstractions;
using MlArtifactFs.Cache;

namespace Mlfs.Commands;

/// <summary>`mlfs cache info|clear`: look at or empty a cache directory (blobs in use by a mount are kept).</summary>
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
        return new Command("cache", "Inspect or empty the local cache.") { info, clear };
    }

    private static BlobCache Open(ParseResult parse) =>
        new(parse.GetValue(CacheDir) ?? BlobCache.DefaultRoot(), long.MaxValue, NullLogger.Instance);
}
