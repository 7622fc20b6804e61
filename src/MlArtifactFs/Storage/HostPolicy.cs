using System.Net;
using System.Net.Sockets;

namespace MlArtifactFs.Storage;

/// <summary>
/// Addresses mlfs never fetches from: link-local ranges (169.254.0.0/16, fe80::/10), where cloud
/// instance metadata and its credentials live (169.254.169.254, fd00:ec2::254), so a manifest cannot
/// turn a mount into a way to read them. Checked on the URL at manifest load (no lookup, no
/// connection) and on every resolved address before a connection is made. Loopback and private
/// ranges stay allowed: that is where users run MinIO.
/// </summary>
public static class HostPolicy
{
    private static readonly IPAddress Ec2MetadataV6 = IPAddress.Parse("fd00:ec2::254");

    /// <summary>Null when the URL's host may be used, else why not (completing "host H ...").</summary>
    public static string? Refuses(Uri uri) =>
        uri.HostNameType is UriHostNameType.IPv4 or UriHostNameType.IPv6 && IPAddress.TryParse(uri.DnsSafeHost, out var address)
            ? Refuses(address)
            : null;

    public static string? Refuses(IPAddress address)
    {
        if (address.IsIPv4MappedToIPv6) address = address.MapToIPv4();
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            Span<byte> b = stackalloc byte[4];
            address.TryWriteBytes(b, out _);
            return b[0] == 169 && b[1] == 254 ? "is link-local (169.254.0.0/16, where instance metadata lives): refused" : null;
        }
        if (address.IsIPv6LinkLocal) return "is link-local (fe80::/10): refused";
        if (address.Equals(Ec2MetadataV6)) return "is the cloud instance metadata address: refused";
        return null;
    }

    /// <summary>
    /// A SocketsHttpHandler ConnectCallback that applies the policy to every address before connecting:
    /// a name may resolve where its URL did not look to lead. <paramref name="literalOnly"/> refuses names
    /// altogether (peer addresses, which come from Redis).
    /// </summary>
    public static async ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, bool literalOnly, CancellationToken cancel)
    {
        string host = context.DnsEndPoint.Host;
        IPAddress[] addresses;
        if (IPAddress.TryParse(host, out var literal)) addresses = [literal];
        else if (literalOnly) throw new HttpRequestException($"{host} is not an IP address");
        else addresses = await Dns.GetHostAddressesAsync(host, cancel).ConfigureAwait(false);
        foreach (var address in addresses)
            if (Refuses(address) is { } why) throw new HttpRequestException($"{host} resolves to {address}, which {why}");
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(addresses, context.DnsEndPoint.Port, cancel).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}
