import ClusterModel

/// Where a process serves /metrics: `--metrics-address HOST:PORT`, or `off`. Plain HTTP, so loopback by
/// default: expose it wider only on a network you trust (it is not the mTLS port).
public enum MetricsAddress: Sendable, Equatable {
    case off
    case listen(host: String, port: Int)

    /// The controller's default: 127.0.0.1:9464 (Prometheus' own exporters' range).
    public static let controllerDefault = MetricsAddress.listen(host: "127.0.0.1", port: 9464)
    /// The agent's default: 127.0.0.1:9465 (a controller and an agent may share a machine).
    public static let agentDefault = MetricsAddress.listen(host: "127.0.0.1", port: 9465)

    /// "off", or host:port (port 0 picks a free one); nil when it is neither.
    public init?(parsing text: String) {
        if text == "off" {
            self = .off
            return
        }
        guard let (host, port) = HostPort.parse(text, allowingPortZero: true) else { return nil }
        self = .listen(host: host, port: port)
    }
}
