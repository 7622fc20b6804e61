namespace MlArtifactFs.Manifest;

/// <summary>A manifest that cannot be used. <see cref="Problems"/> has one line per problem, each naming its entry.</summary>
public sealed class ManifestException(string source, IReadOnlyList<string> problems)
    : Exception(FormatMessage(source, problems))
{
    public string Source_ { get; } = source;
    public IReadOnlyList<string> Problems { get; } = problems;

    private static string FormatMessage(string source, IReadOnlyList<string> problems) =>
        problems.Count == 1
            ? $"invalid manifest {source}: {problems[0]}"
            : $"invalid manifest {source}: {problems.Count} problems:\n  " + string.Join("\n  ", problems);
}
