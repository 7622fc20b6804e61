using System.CommandLine;
using Mlfs.Commands;

namespace Mlfs;

public static class Program
{
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("mlfs: mount ML model artifacts from S3-compatible storage as a lazy, verified, read-only directory.");
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(PushCommand.Create());
        root.Subcommands.Add(SignCommand.Create());
        root.Subcommands.Add(MountCommand.Create());
        root.Subcommands.Add(StatusCommand.Create());
        root.Subcommands.Add(SwitchCommand.Create());
        root.Subcommands.Add(UnmountCommand.Create());
        root.Subcommands.Add(CacheCommand.Create());
        return root;
    }

    public static async Task<int> Main(string[] args)
    {
        InstructionSets.UseTheBestBuild(args);
        var parse = BuildRoot().Parse(args);
        if (parse.Errors.Count > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
        {
            foreach (var error in parse.Errors) Console.Error.WriteLine($"mlfs: {error.Message}");
            Console.Error.WriteLine("Run 'mlfs --help' (or 'mlfs COMMAND --help') for usage.");
            return ExitCodes.InvalidInput;
        }
        return await parse.InvokeAsync().ConfigureAwait(false);
    }
}
