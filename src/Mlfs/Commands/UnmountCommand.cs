using System.CommandLine;
using MlArtifactFs.Fuse;

namespace Mlfs.Commands;

/// <summary>`mlfs unmount`: unmount (lazily with --lazy), e.g. a mount left dead by a crash.</summary>
internal static class UnmountCommand
{
    public static readonly Option<bool> Lazy = new("--lazy", "-z") { Description = "detach now even if files are open" };
    public static readonly Argument<string> MountPoint = new("MOUNTPOINT") { Description = "where the model is mounted" };

    public static Command Create()
    {
        var command = new Command("unmount", "Unmount an mlfs mount (the running mlfs process then exits).") { Lazy, MountPoint };
        command.SetAction(parse =>
        {
            string mountPoint = Path.GetFullPath(parse.GetValue(MountPoint)!);
            if (!FuseMounter.IsMountPoint(mountPoint))
            {
                Console.Error.WriteLine($"mlfs unmount: nothing is mounted at {mountPoint}");
                return ExitCodes.NotMounted;
            }
            if (FuseMounter.TryUnmount(mountPoint, parse.GetValue(Lazy))) return ExitCodes.Success;
            Console.Error.WriteLine($"mlfs unmount: {mountPoint} is busy (files open); use --lazy to detach it now");
            return ExitCodes.MountError;
        });
        return command;
    }
}
