public import Balancing

/// How one service's traffic is forwarded: everything about it except the backends themselves.
public struct ProxySettings: Sendable, Equatable {
    public var mode: ProxyMode
    public var policy: BalancingPolicy
    public var balancing: BalancingOptions
    /// Other backends tried after the first fails to connect (and, in HTTP mode, after an idempotent request's
    /// upstream connection fails before the response starts).
    public var retries: Int
    /// Giving up on one backend's TCP handshake.
    public var connectTimeoutMillis: Int64
    /// A TCP connection (or an HTTP keep-alive connection between requests) with no traffic either way is closed.
    public var idleTimeoutMillis: Int64
    /// HTTP: the backend must start its response within this time, or the request fails over (idempotent) or
    /// gets a 504.
    public var requestTimeoutMillis: Int64
    /// Send a PROXY protocol v2 header first on every backend connection (the backend learns the client's address).
    public var proxyProtocol: Bool
    /// While no backend takes new connections, a new connection (HTTP: a request) waits for one instead of being
    /// refused (a service scaled to zero): at most `holdTimeoutMillis`, at most `holdQueueLimit` at once per port.
    public var holdWhenEmpty: Bool
    public var holdTimeoutMillis: Int64
    public var holdQueueLimit: Int

    public init(mode: ProxyMode = .tcp, policy: BalancingPolicy = .roundRobin, balancing: BalancingOptions = .init(),
                retries: Int = 2, connectTimeoutMillis: Int64 = 2_000, idleTimeoutMillis: Int64 = 300_000,
                requestTimeoutMillis: Int64 = 30_000, proxyProtocol: Bool = false, holdWhenEmpty: Bool = false,
                holdTimeoutMillis: Int64 = 30_000, holdQueueLimit: Int = 1_024) {
        self.mode = mode
        self.policy = policy
        self.balancing = balancing
        self.retries = retries
        self.connectTimeoutMillis = connectTimeoutMillis
        self.idleTimeoutMillis = idleTimeoutMillis
        self.requestTimeoutMillis = requestTimeoutMillis
        self.proxyProtocol = proxyProtocol
        self.holdWhenEmpty = holdWhenEmpty
        self.holdTimeoutMillis = holdTimeoutMillis
        self.holdQueueLimit = holdQueueLimit
    }
}
