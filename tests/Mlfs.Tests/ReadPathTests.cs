using MlArtifactFs.Telemetry;
using System.Diagnostics;
using Mlfs.Tests.Infrastructure;

namespace Mlfs.Tests;

/// <summary>Byte-exact reads through a real FUSE mount from a real S3 server.</summary>
[Collection(S3Collection.Name)]
public sealed class ReadPathTests(S3Fixture s3) : ModelTestBase
{

    private Task<string> UploadAsync(bool seedFormat = false, long chunkSize = Chunk, string[]? prefetch = null) =>
        _model.PublishAsync(s3, "read", chunkSize, prefetch, seedFormat);

    private static void AssertRandomReadsExact(InProcessMount mount, IReadOnlyDictionary<string, byte[]> files, int seed, int reads = 60)
    {
        var random = new Random(seed);
        foreach (var (path, expected) in files)
        {
            using var handle = File.OpenHandle(mount[path]);
            Assert.Equal(expected.Length, RandomAccess.GetLength(handle));
            for (int i = 0; i < (expected.Length == 0 ? 1 : reads / files.Count + 1); i++)
            {
                long offset = expected.Length == 0 ? 0 : random.NextInt64(expected.Length);
                if (i % 3 == 0 && expected.Length > Chunk) offset = (offset / Chunk) * Chunk - random.Next(1, 100); // straddle a chunk boundary
                offset = Math.Max(0, offset);
                int size = random.Next(1, 3 * Chunk);
                var buffer = new byte[size];
                int total = 0;
                while (true)
                {
                    int n = RandomAccess.Read(handle, buffer.AsSpan(total), offset + total);
                    if (n == 0) break;
                    total += n;
                }
                int want = (int)Math.Min(size, Math.Max(0, expected.Length - offset));
                Assert.Equal(want, total);
                Assert.True(expected.AsSpan((int)offset, want).SequenceEqual(buffer.AsSpan(0, want)), $"{path} @ {offset}+{want}");
            }
        }
    }

    /// <summary>
    /// Without passthrough (Linux before 6.9, unprivileged mounts, --no-passthrough), READs of a complete
    /// file are spliced from the cache file into /dev/fuse: byte-exact at any offset and size, seed format too.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ReadsOfCompleteFilesWithoutPassthroughAreSplicedAndExact(bool seedFormat)
    {
        _model.Add("weights.bin", 5 * Chunk + 4099, 11).Add("small.json", 3000, 12);
        string manifest = await UploadAsync(seedFormat: seedFormat);
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, passthrough: false);
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path + " (cold)");
        var wait = System.Diagnostics.Stopwatch.StartNew();
        bool Complete(string path)
        {
            var blob = mount.Mount.FileSystem.Current.FindPath(path)!.File!.OpenBlob(mount.Mount.Cache);
            try { return blob.IsComplete; }
            finally { mount.Mount.Cache.Release(blob); }
        }
        while (!_model.Files.Keys.All(Complete) && wait.Elapsed < TimeSpan.FromMinutes(1))
            await Task.Delay(20); // every chunk stored (reads were answered before the writes landed)
        File.WriteAllText("/proc/sys/vm/drop_caches", "3"); // the next reads reach the daemon again
        long before = mount.Mount.Session.SplicedReads;
        AssertRandomReadsExact(mount, _model.Files, seed: 5, reads: 80);
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path + " (warm)");
        Assert.True(mount.Mount.Session.SplicedReads > before, "no READ was spliced");
    }

    /// <summary>
    /// Verified chunks are written with O_DIRECT from the buffer they were verified in (page-aligned chunks)
    /// or through the page cache (chunks that start mid-page), and served from that buffer while the chunk
    /// memory budget keeps it. With a budget of a few chunks they leave memory at once, so reads come from
    /// the file: exact at odd offsets and sizes, across chunk boundaries and on the last short chunk, cold,
    /// after the page cache is dropped, and after a remount.
    /// </summary>
    [Theory]
    [InlineData(1 << 20)]
    [InlineData((1 << 20) + 4097)]
    public async Task ChunksWrittenPastThePageCacheReadBackExactAtOddOffsets(int chunkSize)
    {
        _model.Add("weights.bin", 7 * chunkSize + 333, 41).Add("one-page-less.bin", chunkSize - 4096, 42);
        string manifest = await UploadAsync(chunkSize: chunkSize);
        var tight = InProcessMount.FastRetries with { BufferBudgetBytes = 3L * chunkSize + (1 << 20) };
        await using (var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, fetcher: tight, passthrough: false))
        {
            AssertRandomReadsExact(mount, _model.Files, seed: 11, reads: 60); // cold: from memory, or from the file once evicted
            foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
            AssertRandomReadsExact(mount, _model.Files, seed: 12, reads: 60); // from the file
            Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
        }
        await using var again = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, passthrough: false);
        foreach (var (path, bytes) in _model.Files) Check.SameBytes(bytes, await File.ReadAllBytesAsync(again[path]), path + " (remounted)");
        Assert.Equal(0, again.Mount.Stats[Counters.Requests]); // every chunk was on disk, and adopted after hashing
    }

    [Fact]
    public async Task RandomReadsAreByteExactColdWarmAndAfterARemount()
    {
        _model.Add("config.json", 700, 1)
              .Add("exact-3-chunks.bin", 3 * Chunk, 2)
              .Add("3-chunks-plus-one.bin", 3 * Chunk + 1, 3)
              .Add("empty.bin", 0, 4)
              .Add("sub dir/ünï 模型.safetensors", 5 * Chunk + 12345, 5);
        string manifest = await UploadAsync(prefetch: ["config.json"]);

        await using (var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName))
        {
            AssertRandomReadsExact(mount, _model.Files, seed: 1);   // cold
            AssertRandomReadsExact(mount, _model.Files, seed: 2);   // warm (partly cached)
            foreach (var (path, bytes) in _model.Files)
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
            Assert.True(mount.Mount.Stats[Counters.BytesFetched] > 0);
        }

        await using (var again = await InProcessMount.StartAsync(s3, manifest, _cache.FullName))
        {
            foreach (var (path, bytes) in _model.Files)
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(again[path]), path);
            AssertRandomReadsExact(again, _model.Files, seed: 3);
            Assert.Equal(0, again.Mount.Stats[Counters.BytesFetched]); // everything came from the persistent cache
            Assert.True(again.Mount.Stats[Counters.Requests] == 0, $"{again.Mount.Stats[Counters.Requests]} request(s) after remount, {again.Mount.Stats[Counters.BytesFetched]} bytes; first mount logs: {again.Logger.All}");
        }
    }

    [Fact]
    public async Task ASeedFormatManifestMountsAndEveryFileIsVerifiedWhole()
    {
        _model.Add("config.json", 300, 10).Add("weights.bin", 3 * Chunk + 77, 11);
        string manifest = await UploadAsync(seedFormat: true, prefetch: ["config.json"]);
        // Bodies are held after 64 KiB, so the first bytes of weights.bin are read while the rest has not landed
        // (whatever the machine's speed): they are served before the whole-file check, and counted.
        await using var proxy = new FaultProxy(s3.Endpoint) { PauseAfter = 64 * 1024 };
        await using (var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint))
        {
            var first = new byte[4096];
            using (var handle = File.OpenHandle(mount["weights.bin"]))
                Assert.Equal(4096, await Task.Run(() => RandomAccess.Read(handle, first, 0)).WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.Equal(_model.Files["weights.bin"][..4096], first);
            proxy.Release.SetResult();
            foreach (var (path, bytes) in _model.Files)
                Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
            Assert.True(mount.Mount.Stats[Counters.UnverifiedBytesServed] > 0); // weights.bin was served as it landed, and counted
            foreach (var path in _model.Files.Keys)
            {
                // Whole-file verification runs once the last chunk lands.
                var file = mount.Mount.FileSystem.Current.FindPath(path)!.File!;
                var blob = file.OpenBlob(mount.Mount.Cache);
                await blob.WholeVerified.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.True(blob.IsComplete, $"{path} verified whole");
                mount.Mount.Cache.Release(blob);
            }
            Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
        }
        // Only verified files survive a restart: everything reads back without a request.
        await using var again = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(again[path]), path);
        Assert.True(again.Mount.Stats[Counters.Requests] == 0, $"{again.Mount.Stats[Counters.Requests]} request(s) after remount, {again.Mount.Stats[Counters.BytesFetched]} bytes; first mount logs: {again.Logger.All}");
    }

    [Fact]
    public async Task TheFirst4KiBOfAColdChunkArriveBeforeTheChunkIsComplete()
    {
        // Seed format: the 16 MiB chunk is both the fetch and the (whole-file) verification unit.
        _model.Add("weights.bin", 16 << 20, 20);
        string manifest = await UploadAsync(seedFormat: true);
        await using var proxy = new FaultProxy(s3.Endpoint) { PauseAfter = 256 * 1024 }; // every body stops after 256 KiB
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint);
        var first = new byte[4096];
        var read = Task.Run(() =>
        {
            using var handle = File.OpenHandle(mount["weights.bin"]);
            return RandomAccess.Read(handle, first, 0);
        });
        int n = await read.WaitAsync(TimeSpan.FromSeconds(60)); // completes while the body is held
        Assert.Equal(4096, n);
        Assert.True(proxy.BytesSent < 16 << 20, $"{proxy.BytesSent} bytes had been sent");
        Assert.Equal(_model.Files["weights.bin"][..4096], first);
        proxy.Release.SetResult();
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(mount["weights.bin"]), "file");
    }

    [Fact]
    public async Task AColdReadWaitsOnlyForItsOwnChunk()
    {
        // Chunked manifest: 1 MiB chunks in 16 MiB requests; a 4 KiB read returns once chunk 0 verified.
        _model.Add("weights.bin", 16 << 20, 21);
        string manifest = await UploadAsync();
        await using var proxy = new FaultProxy(s3.Endpoint) { PauseAfter = Chunk + 64 * 1024 };
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint);
        var first = new byte[4096];
        int n = await Task.Run(() =>
        {
            using var handle = File.OpenHandle(mount["weights.bin"]);
            return RandomAccess.Read(handle, first, 0);
        }).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(4096, n);
        Assert.True(proxy.BytesSent < 2 * Chunk + 128 * 1024, $"{proxy.BytesSent} bytes had been sent");
        Assert.Equal(_model.Files["weights.bin"][..4096], first);
        proxy.Release.SetResult();
    }

    [Fact]
    public async Task AColdRandomReadGetsItsChunkAsParallelPartsAndABadPartFallsBackToOneStream()
    {
        const int chunk = 4 << 20;
        _model.Add("weights.bin", 4 * chunk, 22);
        byte[] expected = _model.Files["weights.bin"];
        string manifest = await UploadAsync(chunkSize: chunk);
        await using var proxy = new FaultProxy(s3.Endpoint)
        {
            Faults = (n, _) => n switch { 6 => ProxyFault.FlippedByte, 10 => ProxyFault.ConnectionReset, _ => ProxyFault.None },
        };
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, endpoint: proxy.Endpoint,
            fetcher: InProcessMount.FastRetries with { DemandChunkParts = 4 });
        // RandomAccess = POSIX_FADV_RANDOM: no kernel read-ahead. The reads below are > 4 MiB apart, so
        // mlfs sees no sequential pattern either: each read asks for its own chunk only.
        using var handle = File.OpenHandle(mount["weights.bin"], FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var buffer = new byte[4096];
        void ReadAt(long offset)
        {
            Assert.Equal(4096, RandomAccess.Read(handle, buffer, offset));
            Assert.True(expected.AsSpan((int)offset, 4096).SequenceEqual(buffer), $"bytes at {offset}");
        }

        // Chunk 3: four 1 MiB GETs in parallel, nothing else.
        ReadAt(3 * chunk + 12345);
        Assert.Equal(Enumerable.Range(0, 4).Select(p => $"bytes={3 * chunk + p * (1 << 20)}-{3 * chunk + (p + 1) * (1 << 20) - 1}").Order(),
            proxy.Ranges.Order());

        // Chunk 0: one of its parts has a flipped byte. The chunk fails verification and is fetched again as
        // one stream; only verified bytes are served.
        ReadAt(7);
        Assert.True(proxy.Gets == 9, string.Join(" | ", proxy.Ranges));
        Assert.Equal("bytes=0-4194303", proxy.Ranges.Last());
        Assert.Contains(mount.Logger.Lines, l => l.Contains("fetched in 4 parts does not match its BLAKE3", StringComparison.Ordinal)); // the default chunk hash

        // Chunk 2: a part's connection is reset. The other parts are stopped; the chunk comes as one stream.
        ReadAt(2 * chunk + 99);
        Assert.True(proxy.Gets == 14, string.Join(" | ", proxy.Ranges));
        Assert.Equal($"bytes={2 * chunk}-{3 * chunk - 1}", proxy.Ranges.Last());
        Assert.Equal(2, proxy.FaultsInjected);

        Check.SameBytes(expected, await File.ReadAllBytesAsync(mount["weights.bin"]), "weights.bin");
        Assert.Equal(0, mount.Mount.Stats[Counters.FetchFailures]);
    }

    [Fact]
    public async Task CompleteFilesOpenInPassthroughAndReadTheSame()
    {
        _model.Add("weights.bin", 4 * Chunk + 5, 30);
        string manifest = await UploadAsync();
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        var bytes = _model.Files["weights.bin"];
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount["weights.bin"]), "file");
        // RELEASE of the first open reaches us asynchronously; passthrough and normal opens of one
        // inode cannot be mixed, so wait (bounded) until it has.
        Assert.True(await Check.EventuallyAsync(() => mount.Mount.FileSystem.OpenHandles == 0), "the first open's RELEASE never reached the daemon");
        Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount["weights.bin"]), "file");
        var status = mount.Mount.GetStatus();
        Assert.True(status.Passthrough, "this kernel offers passthrough and the mount runs as root");
        Assert.True(status.Count("passthrough_opens") >= 1);
    }

    [Fact]
    public async Task AfterARestartFilesCachedWholeAreCheckedInTheBackgroundAndOpenInPassthrough()
    {
        _model.Add("weights.bin", 4 * Chunk + 5, 31).Add("damaged.bin", 3 * Chunk, 32).Add("never-read.bin", Chunk, 33);
        string manifest = await UploadAsync();
        await using (var first = await InProcessMount.StartAsync(s3, manifest, _cache.FullName))
        {
            foreach (string path in new[] { "weights.bin", "damaged.bin" })
                Check.SameBytes(_model.Files[path], await File.ReadAllBytesAsync(first[path]), path);
        }
        // Damage one byte of damaged.bin's cache file while no mount runs.
        string damaged = Directory.EnumerateFiles(_cache.FullName, "*.data", SearchOption.AllDirectories)
            .Single(f => new FileInfo(f).Length == 3 * Chunk);
        await using (var stream = new FileStream(damaged, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Position = Chunk + 77;
            int b = stream.ReadByte();
            stream.Position = Chunk + 77;
            stream.WriteByte((byte)(b ^ 0x20));
        }
        int cacheFiles = Directory.EnumerateFiles(_cache.FullName, "*.rec", SearchOption.AllDirectories).Count();

        await using var again = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        await again.Mount.CachedFilesChecked.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(cacheFiles, Directory.EnumerateFiles(_cache.FullName, "*.rec", SearchOption.AllDirectories).Count()); // nothing created for never-read.bin
        Check.SameBytes(_model.Files["weights.bin"], await File.ReadAllBytesAsync(again["weights.bin"]), "weights.bin");
        Assert.Equal(1, again.Mount.GetStatus().Count("passthrough_opens")); // its first open, checked before it
        Assert.Equal(0, again.Mount.Stats[Counters.Requests]);
        // The damaged chunk was found by the check, dropped, and is fetched again on read; nothing wrong is served.
        Check.SameBytes(_model.Files["damaged.bin"], await File.ReadAllBytesAsync(again["damaged.bin"]), "damaged.bin");
        Assert.True(again.Mount.Stats[Counters.ChunksFetched] == 1, $"{again.Mount.Stats[Counters.ChunksFetched]} chunks fetched");
        Assert.Contains(again.Logger.Lines, l => l.Contains("damaged.bin", StringComparison.Ordinal) && l.Contains("is damaged", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SequentialReadAheadFetchesInParallelAndReadsAreExact()
    {
        _model.Add("big.bin", 40 << 20, 40);
        string manifest = await UploadAsync(chunkSize: 4 << 20);
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName);
        var buffer = new byte[1 << 20];
        using (var stream = new FileStream(mount["big.bin"], FileMode.Open, FileAccess.Read, FileShare.Read, 0))
        {
            long offset = 0;
            int n;
            while ((n = await stream.ReadAsync(buffer)) > 0)
            {
                Assert.True(_model.Files["big.bin"].AsSpan((int)offset, n).SequenceEqual(buffer.AsSpan(0, n)), $"at {offset}");
                offset += n;
            }
            Assert.Equal(40 << 20, offset);
        }
        Assert.Equal(40 << 20, mount.Mount.Stats[Counters.BytesFetched]); // every byte fetched exactly once
    }

    [Fact]
    public async Task PrefetchAllFillsTheCacheWithoutAnyRead()
    {
        _model.Add("a.bin", 3 * Chunk, 50).Add("b/c.bin", 2 * Chunk + 9, 51).Add("d.json", 300, 52);
        string manifest = await UploadAsync();
        await using var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName, prefetchAll: true);
        long total = _model.Files.Values.Sum(b => (long)b.Length);
        var sw = Stopwatch.StartNew();
        while (mount.Mount.Stats[Counters.BytesFetched] < total && sw.Elapsed < TimeSpan.FromSeconds(60)) await Task.Delay(50);
        Assert.Equal(total, mount.Mount.Stats[Counters.BytesFetched]);
        Assert.Equal(0, mount.Mount.Stats[Counters.CacheMisses]); // nobody read anything
        foreach (var (path, bytes) in _model.Files)
            Check.SameBytes(bytes, await File.ReadAllBytesAsync(mount[path]), path);
        Assert.Equal(total, mount.Mount.Stats[Counters.BytesFetched]); // and reads fetched nothing more
    }
}
