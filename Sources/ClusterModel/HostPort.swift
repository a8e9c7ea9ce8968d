/// `host:port` as operators type it in flags and configuration; IPv6 hosts in brackets ("[::1]:7400").
public enum HostPort {
    /// Splits `text` into host and port; nil when it is not host:port. Port 0 ("pick one") only when allowed.
    public static func parse(_ text: String, allowingPortZero: Bool = false) -> (host: String, port: Int)? {
        let host: String
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = String(text[..<colon])
            guard !host.contains(":") else { return nil }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (allowingPortZero ? 0 : 1)...65535 ~= port else { return nil }
        return (host, port)
    }
}
