/// One place a service's traffic can go: a task's address and how much of the traffic it should take.
public struct Backend: Hashable, Sendable {
    /// Stable identity across table versions (the task id; the address in standalone mode).
    public var id: String
    /// Where to connect: an IPv4/IPv6 literal or a host name, and a port.
    public var host: String
    public var port: Int
    /// Relative share of new connections (1...256); 0 means draining: no new connections, existing ones finish.
    public var weight: UInt32
    /// The node the backend runs on, and whether that is this balancer's node (locality preference).
    public var node: String
    public var isLocal: Bool
    /// At most this many connections at once through one balancer; 0 = unlimited.
    public var maxConnections: Int

    public init(id: String, host: String, port: Int, weight: UInt32 = 1, node: String = "", isLocal: Bool = false,
                maxConnections: Int = 0) {
        self.id = id
        self.host = host
        self.port = port
        self.weight = weight
        self.node = node
        self.isLocal = isLocal
        self.maxConnections = maxConnections
    }
}
