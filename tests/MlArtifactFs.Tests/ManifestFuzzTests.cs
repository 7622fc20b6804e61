using System.Text;
using MlArtifactFs.Manifest;

namespace MlArtifactFs.Tests;

/// <summary>
/// Mutations of valid manifests (flips, cuts, insertions, duplications, hostile values) must end
/// as a loaded manifest or a ManifestException: never another exception, never a hang. Bounded:
/// a fixed number of cases from a fixed seed, so a failure reproduces.
/// </summary>
public class ManifestFuzzTests
{
    private const string Sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    private static readonly string[] Seeds =
    [
        $$"""{"artifact_id":"m","version":"v1","mount_path":"/mnt/m","prefetch":["config.json"],"files":[{"path":"config.json","url":"s3://b/config.json","size":10,"sha256":"{{Sha}}","compression":"none"},{"path":"w/model.bin","url":"https://b.s3.amazonaws.com/w/model.bin","size":0,"sha256":"{{Sha}}"}]}""",
        $$"""{"artifact_id":"m","version":"v2","chunk_size":4,"files":[{"path":"a","url":"s3://b/a","size":9,"sha256":"{{Sha}}","chunks":["{{Sha}}","{{Sha}}","{{Sha}}"]}]}""",
    ];

    private static readonly string[] Hostile =
    [
        "../", "/", "\\u0000", "\\\\", "-1", "1e400", "99999999999999999999", "null", "[]", "{}", "\"", ",", "\\ud800",
        new string('[', 200), "\u202e", "..", "//", "ftp://x/y", "true",
    ];

    [Fact]
    public void MutatedManifestsOnlyEverFailValidation()
    {
        var random = new Random(20261129);
        int loaded = 0, rejected = 0;
        for (int i = 0; i < 4000; i++)
        {
            string input = Mutate(Seeds[i % Seeds.Length], random);
            try
            {
                var m = ManifestLoader.Parse(input, "fuzz");
                Assert.NotNull(m.Files);
                loaded++;
            }
            catch (ManifestException e)
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message));
                rejected++;
            }
            catch (Exception e)
            {
                Assert.Fail($"case {i}: {e.GetType().Name}: {e.Message}\ninput: {input}");
            }
        }
        Assert.True(rejected > 1000, $"{rejected} rejected, {loaded} loaded"); // the mutations do bite
    }

    private static string Mutate(string seed, Random random)
    {
        var s = new StringBuilder(seed);
        int edits = random.Next(1, 4);
        for (int e = 0; e < edits && s.Length > 0; e++)
        {
            int at = random.Next(s.Length);
            switch (random.Next(6))
            {
                case 0: s[at] = (char)random.Next(1, 0x3000); break;                                 // flip a character
                case 1: s.Remove(at, Math.Min(s.Length - at, random.Next(1, 20))); break;            // cut
                case 2: s.Insert(at, Hostile[random.Next(Hostile.Length)]); break;                   // hostile insert
                case 3: s.Insert(at, s.ToString(at, Math.Min(s.Length - at, random.Next(1, 40)))); break; // duplicate
                case 4: s.Length = random.Next(s.Length); break;                                     // truncate
                default:                                                                             // swap a value
                    string text = s.ToString();
                    int colon = text.IndexOf(':', at);
                    if (colon > 0) s.Insert(colon + 1, Hostile[random.Next(Hostile.Length)] + ",");
                    break;
            }
        }
        return s.ToString();
    }

    [Fact]
    public void DeepButReasonablePathsLoadAndOverlongOnesAreRejected()
    {
        string deep = string.Join('/', Enumerable.Repeat("d", 1000)) + "/f";
        var m = ManifestLoader.Parse($$"""{"artifact_id":"m","version":"v","files":[{"path":"{{deep}}","url":"s3://b/f","size":1,"sha256":"{{Sha}}"}]}""");
        Assert.Equal(deep, m.Files![0].Path);
        string overlong = string.Join('/', Enumerable.Repeat("abcdefgh", 400));
        var e = Assert.Throws<ManifestException>(() => ManifestLoader.Parse(
            $$"""{"artifact_id":"m","version":"v","files":[{"path":"{{overlong}}","url":"s3://b/f","size":1,"sha256":"{{Sha}}"}]}"""));
        Assert.Contains("is longer than 3072 bytes", e.Message);
    }

    [Fact]
    public void AnUnpairedSurrogateEscapeIsAValidationErrorNotACrash()
    {
        // Found by MutatedManifestsOnlyEverFailValidation (case 47).
        var e = Assert.Throws<ManifestException>(() => ManifestLoader.Parse(
            $$"""{"artifact_id":"m","v\ud800ersion":"v2","files":[{"path":"a","url":"s3://b/a","size":9,"sha256":"{{Sha}}"}]}"""));
        Assert.Contains("unreadable text", e.Message);
    }
}
