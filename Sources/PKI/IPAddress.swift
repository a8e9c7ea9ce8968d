#if canImport(Glibc)
internal import Glibc
#elseif canImport(Musl)
internal import Musl
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Text IP addresses to the network-order bytes a SubjectAlternativeName carries.
enum IPAddress {
    /// 4 bytes for an IPv4 address, 16 for IPv6, nil for anything else (including host names).
    static func bytes(_ text: String) -> [UInt8]? {
        // inet_pton is a pure parser (no lookups), and handles "::" compression and "::ffff:1.2.3.4".
        var v4 = [UInt8](repeating: 0, count: 4)
        if inet_pton(AF_INET, text, &v4) == 1 { return v4 }
        var v6 = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET6, text, &v6) == 1 { return v6 }
        return nil
    }
}
