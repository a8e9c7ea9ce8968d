import ClusterModel

/// The parts of resolv.conf(5) the DNS responder needs: where the host sends its queries. Pure (the server reads
/// the file).
public enum ResolvConf {
    /// The `nameserver` addresses, in order: IPv4 or IPv6 literals (an IPv6 zone such as `%eth0` kept). Comments
    /// (`#`, `;`) and other keywords are skipped, and so is anything that is not an address.
    public static func nameservers(in text: String) -> [String] {
        text.split(whereSeparator: \.isNewline).compactMap { line in
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2, words[0] == "nameserver" else { return nil }
            let address = String(words[1])
            let host = address.split(separator: "%", maxSplits: 1).first ?? ""
            let isIPv6 = host.contains(":") && host.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            return IPv4Address(address) != nil || isIPv6 ? address : nil
        }
    }
}
