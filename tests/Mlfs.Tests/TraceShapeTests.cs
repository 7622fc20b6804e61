using System.Collections.Concurrent;
using System.Diagnostics;
using MlArtifactFs.Telemetry;
using Mlfs.Tests.Infrastructure;
using Xunit.Abstractions;

namespace Mlfs.Tests;

/// <summary>
/// The spans of a real mount (real local S3 server, real FUSE): each read that waits on the network,
/// each prefetched file and each read-ahead run is a short trace of its own; its root carries file,
/// offset and length; GETs and verifications are its children; no span outlives its parent (so none
/// outlives the read it serves), and nothing hangs under the mount's lifetime.
/// </summary>
[Collection(S3Collection.Name)]
public sealed class TraceShapeTests(S3Fixture s3, ITestOutputHelper output) : ModelTestBase
{
    private static readonly HashSet<string> Roots = ["mlfs.read", "mlfs.prefetch", "mlfs.fetch", "mlfs.verify"];

    [Fact]
    public async Task ColdReadsAndPrefetchAreShortTracesOfTheirOwn()
    {
        string id = Guid.NewGuid().ToString("N")[..8];
        string config = $"config-{id}.json", weights = $"weights-{id}.bin";
        _model.Add(config, 900, 1).Add(weights, 6 * Chunk + 777, 2);
        string manifest = await _model.PublishAsync(s3, "traces", prefetch: [config]);

        var spans = new ConcurrentBag<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == MlfsTelemetry.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Add,
        };
        ActivitySource.AddActivityListener(listener);

        await using (var mount = await InProcessMount.StartAsync(s3, manifest, _cache.FullName))
        {
            // A read in the middle (not sequential: no read-ahead of ours) waits on the network.
            var expected = _model.Files[weights];
            using (var file = File.OpenHandle(mount[weights]))
            {
                var some = new byte[4096];
                long at = 3 * Chunk + 12345;
                Assert.Equal(some.Length, RandomAccess.Read(file, some, at));
                Check.SameBytes(expected.AsSpan((int)at, some.Length).ToArray(), some, "the middle of the file");
            }
            // Then the whole file, sequentially: read-ahead runs.
            Check.SameBytes(expected, await File.ReadAllBytesAsync(mount[weights]), weights);
        }
        // Every run has ended with the mount; its spans are all in.

        var all = spans.ToArray();
        var byId = all.ToDictionary(s => s.SpanId);
        // Ours: the traces that name one of this test's files (other tests' mounts may run meanwhile).
        var ourTraces = all.Where(s => s.GetTagItem("mlfs.file") is string f && (f == config || f == weights)).Select(s => s.TraceId).ToHashSet();
        var ours = all.Where(s => ourTraces.Contains(s.TraceId)).ToList();
        output.WriteLine($"{ours.Count} spans in {ourTraces.Count} traces: " +
                         string.Join(", ", ours.GroupBy(s => s.OperationName).Select(g => $"{g.Key} {g.Count()}")));

        // Nothing is parented by a span that lives as long as the mount.
        var mountPhases = all.Where(s => s.OperationName.StartsWith("mlfs.mount.", StringComparison.Ordinal)).Select(s => s.SpanId).ToHashSet();
        Assert.DoesNotContain(all, s => mountPhases.Contains(s.ParentSpanId));

        foreach (var span in ours)
        {
            if (span.ParentSpanId == default)
            {
                Assert.Contains(span.OperationName, Roots);
                Assert.IsType<string>(span.GetTagItem("mlfs.file"));
                if (span.OperationName != "mlfs.verify")
                {
                    Assert.NotNull(span.GetTagItem("mlfs.offset"));
                    Assert.NotNull(span.GetTagItem("mlfs.length"));
                }
                continue;
            }
            // Every child's parent was recorded, and the child lies within it: none outlives what it serves.
            Assert.True(byId.TryGetValue(span.ParentSpanId, out var parent), $"{span.OperationName}: its parent was never recorded");
            Assert.True(span.StartTimeUtc >= parent.StartTimeUtc, $"{span.OperationName} starts before its parent {parent.OperationName}");
            Assert.True(span.StartTimeUtc + span.Duration <= parent.StartTimeUtc + parent.Duration,
                $"{span.OperationName} ends {(span.StartTimeUtc + span.Duration - parent.StartTimeUtc - parent.Duration).TotalMilliseconds:0.###} ms after its parent {parent.OperationName}");
        }

        List<Activity> TraceOf(Activity root) => [.. ours.Where(s => s.TraceId == root.TraceId)];
        bool HasGetAndVerify(List<Activity> trace) =>
            trace.Any(s => s.OperationName == "mlfs.get" && s.GetTagItem("mlfs.source") is "origin"
                           && s.GetTagItem("mlfs.range.start") is long && s.GetTagItem("mlfs.range.end") is long
                           && s.GetTagItem("mlfs.attempt") is int && s.GetTagItem("mlfs.bytes") is long and > 0
                           && s.GetTagItem("http.response.status_code") is 206)
            && trace.Any(s => s.OperationName == "mlfs.verify" && s.GetTagItem("mlfs.verified") is true);

        // The cold read: a trace rooted at the read, with the fetch, its GETs and the verification under it.
        var reads = ours.Where(s => s.OperationName == "mlfs.read" && s.ParentSpanId == default && (string?)s.GetTagItem("mlfs.file") == weights).ToList();
        Assert.Contains(reads, r => HasGetAndVerify(TraceOf(r)) && TraceOf(r).Any(s => s.OperationName == "mlfs.fetch"));
        // The prefetched file: its own trace, the same shape.
        var prefetch = Assert.Single(ours, s => s.OperationName == "mlfs.prefetch" && (string?)s.GetTagItem("mlfs.file") == config);
        Assert.Equal(0L, prefetch.GetTagItem("mlfs.offset"));
        Assert.True(HasGetAndVerify(TraceOf(prefetch)), "the prefetch trace has no GET or verification");
        // Read-ahead: runs that are traces of their own.
        Assert.Contains(ours, s => s.OperationName == "mlfs.fetch" && s.ParentSpanId == default && s.GetTagItem("mlfs.reason") is "read_ahead"
                                   && HasGetAndVerify(TraceOf(s)));
    }
}
