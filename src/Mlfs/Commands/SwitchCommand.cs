using System.CommandLine;
using MlArtifactFs.Mounting;

namespace Mlfs.Commands;

/// <summary>`mlfs switch`: hot-swap the mounted version.</summary>
internal static class SwitchCommand
{
    public static readonly Option<string> Manifest = new("--manifest", "-m") { Description = "the manifest of the version to serve: a file, s3://bucket/key or an http(s) URL", Required = true };
    public static readonly Argument<string> MountPoint = new("MOUNTPOINT") { Description = "where the model is mounted" };

    public static Command Create()
    {
        var command = new Command("switch", "Switch a running mount to another manifest; open files keep reading their version.") { Manifest, MountPoint };
        command.SetAction((parse, cancel) => RunAsync(parse, cancel));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult parse, CancellationToken cancel)
    {
        string manifest = parse.GetValue(Manifest)!;
        if (!MlArtifactFs.Manifest.ManifestSource.IsRemote(manifest)) manifest = Path.GetFullPath(manifest); // the daemon's working directory is not ours
        var response = await Control.SendAsync(parse.GetValue(MountPoint)!, new ControlRequest { Command = "switch", Manifest = manifest }, cancel)
            .ConfigureAwait(false);
        if (response is null) return ExitCodes.NotMounted;
        if (!response.Ok)
        {
            Console.Error.WriteLine($"mlfs switch: {response.Error}");
            return response.SignatureRefused ? ExitCodes.SignatureRefused : ExitCodes.InvalidInput;
        }
        Console.WriteLine($"switched to {response.Status?.ArtifactId} {response.Status?.Version} in {response.SwitchMilliseconds:0} ms ({Sizes.Format(response.BytesFetched ?? 0)} fetched)");
        return ExitCodes.Success;
    }
}
