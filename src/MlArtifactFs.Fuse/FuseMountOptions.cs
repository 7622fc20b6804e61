namespace MlArtifactFs.Fuse;

public sealed record FuseMountOptions
{
    public required string MountPoint { get; init; }

    /// <summary>Shown as the source column of /proc/mounts.</summary>
    public string FsName { get; init; } = "mlfs";

    /// <summary>The type shows as fuse.&lt;Subtype&gt;.</summary>
    public string Subtype { get; init; } = "mlfs";

    /// <summary>Let users other than the mounting one in (needs root or user_allow_other).</summary>
    public bool AllowOther { get; init; }

    /// <summary>
    /// The mount's read_ahead_kb. It decides how far ahead the kernel sends READs (each at most
    /// <see cref="MaxRead"/>); the default 128 KiB keeps only one small READ in flight. 8 MiB keeps
    /// eight 1 MiB READs queued, enough to overlap our fetches with the reader. 0 leaves it alone.
    /// </summary>
    public int ReadAheadKb { get; init; } = 8192;

    /// <summary>Largest READ we accept: 1 MiB (max_pages 256) is the most a single request carries.</summary>
    public int MaxRead { get; init; } = 1 << 20;

    /// <summary>
    /// Reader threads, each on its own cloned /dev/fuse fd. Twice the cores, 4 to 8: a READ of a complete file
    /// is spliced from the cache file on the reader thread, which waits while the disk reads it; with one
    /// thread per core (2 here) warm daemon reads ran at 2.5-3.0 GB/s, with 4 at 3.2-3.6 (8: no better).
    /// </summary>
    public int ReaderThreads { get; init; } = Math.Clamp(2 * Environment.ProcessorCount, 4, 8);

    /// <summary>Ask the kernel for FUSE passthrough (used only if it offers it and we are privileged).</summary>
    public bool EnablePassthrough { get; init; } = true;

    /// <summary>How long the kernel may cache entries and attributes: long, because trees are immutable
    /// (a version switch invalidates explicitly).</summary>
    public TimeSpan EntryTimeout { get; init; } = TimeSpan.FromHours(1);
}
