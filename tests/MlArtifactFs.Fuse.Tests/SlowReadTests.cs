using System.Diagnostics;

namespace MlArtifactFs.Fuse.Tests;

/// <summary>Reads that wait on the file system: INTERRUPT cancels them; unmount fails them; nothing hangs.</summary>
public sealed class SlowReadTests
{
    [Fact]
    public async Task UnmountWhileAReaderIsBlockedGivesTheReaderAnError()
    {
        var fs = new InMemoryFileSystem();
        fs.AddSlowFile("slow.bin", 1 << 20);
        var mount = new TestMount(fs);
        try
        {
            var reader = Task.Run(() =>
            {
                using var handle = File.OpenHandle(mount["slow.bin"]);
                return RandomAccess.Read(handle, new byte[4096], 0);
            });
            await fs.SlowReadStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
            mount.Session.Dispose(); // unmount with a read in flight
            var failure = await Record.ExceptionAsync(() => reader.WaitAsync(TimeSpan.FromSeconds(60)));
            Assert.True(failure is IOException, $"the blocked reader should fail with an I/O error, got {failure?.GetType().Name ?? "a result"}");
            Assert.True(fs.SlowReadCancelled.Task.IsCompleted, "the pending read was cancelled");
            Assert.False(MlArtifactFs.Fuse.FuseMounter.IsMountPoint(mount.MountPoint));
            await mount.Session.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            fs.SlowGate.TrySetResult();
            mount.Dispose();
        }
    }

    [Fact]
    public async Task KillingABlockedReaderInterruptsItsRead()
    {
        var fs = new InMemoryFileSystem();
        fs.AddSlowFile("slow.bin", 1 << 20);
        using var mount = new TestMount(fs);
        try
        {
            using var dd = Process.Start(new ProcessStartInfo("dd", $"if={mount["slow.bin"]} of=/dev/null bs=4k count=1") { RedirectStandardError = true })!;
            await fs.SlowReadStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));
            dd.Kill(); // SIGKILL: the kernel sends INTERRUPT for the pending READ
            await fs.SlowReadCancelled.Task.WaitAsync(TimeSpan.FromSeconds(30));
            await dd.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(mount.Session.GetOpCount(MlArtifactFs.Fuse.Protocol.FuseOpcode.Interrupt) > 0);
        }
        finally
        {
            fs.SlowGate.TrySetResult();
        }
    }
}
