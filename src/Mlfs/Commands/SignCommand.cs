using System.CommandLine;
using System.Security.Cryptography;
using MlArtifactFs.Manifest;

namespace Mlfs.Commands;

/// <summary>`mlfs sign`: the publisher's signature over a manifest (MANIFEST.sig), and `mlfs sign --new-key` to make a key pair.</summary>
internal static class SignCommand
{
    public static readonly Option<string?> Key = new("--key") { Description = "the publisher's ECDSA P-256 private key (PEM)" };
    public static readonly Option<string?> NewKey = new("--new-key")
    {
        Description = "make a new ECDSA P-256 key pair: PATH (private, mode 0600) and PATH.pub (the public key mounts verify with)",
    };
    public static readonly Option<string?> Output = new("--output", "-o") { Description = "where to write the signature (default MANIFEST.sig, where mount and switch look)" };
    public static readonly Argument<string?> Manifest = new("MANIFEST") { Description = "the manifest to sign", Arity = ArgumentArity.ZeroOrOne };

    public static Command Create()
    {
        var command = new Command("sign", "Sign a manifest with the publisher's key: writes MANIFEST.sig (a Sigstore bundle: DSSE over an in-toto statement).")
        {
            Key, NewKey, Output, Manifest,
        };
        command.SetAction(Run);
        return command;
    }

    private static int Run(ParseResult parse)
    {
        try
        {
            if (parse.GetValue(NewKey) is { } newKey)
            {
                using var created = ECDsa.Create(ECCurve.NamedCurves.nistP256);
                WritePrivate(newKey, created.ExportPkcs8PrivateKeyPem());
                File.WriteAllText(newKey + ".pub", created.ExportSubjectPublicKeyInfoPem() + "\n");
                Console.WriteLine($"mlfs sign: key {ManifestSignature.KeyHint(created)}: private {newKey}, public {newKey}.pub");
                if (parse.GetValue(Manifest) is null) return ExitCodes.Success;
            }
            string manifest = parse.GetValue(Manifest) ?? throw new ArgumentException("name the MANIFEST to sign");
            string keyPath = parse.GetValue(Key) ?? parse.GetValue(NewKey) ?? throw new ArgumentException("--key KEY.pem is required");
            using var key = ManifestSignature.LoadKey(keyPath, requirePrivate: true);
            byte[] bytes;
            try { bytes = File.ReadAllBytes(manifest); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new ArgumentException($"cannot read {manifest}: {e.Message}"); }
            byte[] bundle = ManifestSignature.Sign(bytes, key);
            string output = parse.GetValue(Output) ?? ManifestSignature.SignaturePathFor(manifest);
            File.WriteAllBytes(output, bundle);
            Console.WriteLine($"mlfs sign: {output}: {manifest} signed by key {ManifestSignature.KeyHint(key)}");
            return ExitCodes.Success;
        }
        catch (ManifestException e)
        {
            Console.Error.WriteLine($"mlfs sign: {e.Message}");
            return ExitCodes.InvalidInput;
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"mlfs sign: {e.Message}");
            return ExitCodes.InvalidInput;
        }
    }

    /// <summary>A private key is created 0600 and never through a link planted at its path.</summary>
    private static void WritePrivate(string path, string pem)
    {
        using var stream = new FileStream(path, new FileStreamOptions
        {
            Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        });
        using var writer = new StreamWriter(stream);
        writer.Write(pem + "\n");
    }
}
