/// What a listener forwards: TCP byte streams (L4) or HTTP/1.1 requests (L7).
public enum ProxyMode: String, CaseIterable, Sendable {
    /// Bytes both ways, one backend per client connection.
    case tcp
    /// Requests parsed; a backend per request over pooled upstream connections.
    case http

    public init?(named name: String) {
        switch name.lowercased() {
        case "tcp", "l4", "": self = .tcp
        case "http", "l7": self = .http
        default: return nil
        }
    }
}
