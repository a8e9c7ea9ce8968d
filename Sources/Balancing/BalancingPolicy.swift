/// How a service's balancer chooses a backend for a new connection (L4) or request (L7).
public enum BalancingPolicy: String, CaseIterable, Sendable {
    /// Smooth weighted round robin (NGINX's): equal weights give a strict rotation; weights give proportional,
    /// interleaved shares.
    case roundRobin = "round-robin"
    /// Fewest active connections relative to weight; ties go round robin.
    case leastConnections = "least-conn"
    /// A consistent hash of the client address (a Maglev table): a client keeps its backend, and adding or
    /// removing one backend of N remaps about 1/N of the clients.
    case ipHash = "ip-hash"
    /// Weighted random.
    case random = "random"
    /// Power of two choices: two backends drawn at random (weighted), the one with fewer active requests wins.
    case powerOfTwoChoices = "p2c"

    /// Accepts the canonical names and the common aliases ("roundrobin", "rr", "leastconn", "least-connections",
    /// "source", "hash", "p2c", "least-request").
    public init?(named name: String) {
        switch name.lowercased() {
        case "round-robin", "roundrobin", "rr", "weighted-round-robin", "": self = .roundRobin
        case "least-conn", "leastconn", "least-connections": self = .leastConnections
        case "ip-hash", "iphash", "source", "hash", "consistent-hash", "maglev": self = .ipHash
        case "random": self = .random
        case "p2c", "least-request", "power-of-two": self = .powerOfTwoChoices
        default: return nil
        }
    }
}
