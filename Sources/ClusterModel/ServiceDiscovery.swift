/// How a container finds a service by name: the DNS responder on its node (listening on the node bridge's
/// gateway address) answers `SERVICE` and `SERVICE.<domain>` with the service's virtual IP, and containers on the
/// bridge network get a resolv.conf that searches `domain`, so `curl http://web/` works inside any of them.
public enum ServiceDiscovery {
    /// The cluster's DNS domain: names under it are answered by the node, never sent to upstream resolvers.
    public static let domain = "flotilla.internal"
    /// The port the node's DNS responder listens on (resolv.conf cannot name another).
    public static let port = 53
    /// Seconds a client may cache an answer: short, so a changed virtual IP reaches clients within seconds.
    public static let ttlSeconds: UInt32 = 5
}

extension ServiceDiscovery {
    /// The resolv.conf of a container on the bridge network: the node's DNS responder at `nameserver` (the
    /// bridge's gateway address), the cluster domain searched, and `ndots:1`, so a bare service name ("web") tries
    /// the search domain first while a dotted name ("example.com") is asked as it is first.
    public static func resolvConf(nameserver: IPv4Address) -> String {
        "nameserver \(nameserver)\nsearch \(domain)\noptions ndots:1\n"
    }
}
