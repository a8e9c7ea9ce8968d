public import ClusterModel
import Synchronization

/// What the node's DNS responder asks for a service name: the service's addresses (its virtual IP), or none when
/// no such service is known. Called on the responder's task for every query, so it must answer at once.
public protocol ServiceNameResolver: Sendable {
    /// `name` is one DNS label in lower case ("web"); an empty result means NXDOMAIN.
    func addresses(ofService name: String) -> [IPv4Address]
}

/// The service names this node answers for, kept by whoever reads the backend tables (service name → virtual
/// IP) and read by the DNS responder. Thread-safe; names are matched without regard to ASCII case.
public final class ServiceNameTable: ServiceNameResolver {
    private let entries: Mutex<[String: [IPv4Address]]>

    public init(_ entries: [String: [IPv4Address]] = [:]) {
        self.entries = Mutex(Self.normalized(entries))
    }

    public func addresses(ofService name: String) -> [IPv4Address] {
        let key = name.lowercased()
        return entries.withLock { $0[key] ?? [] }
    }

    /// Replaces every entry (a new complete table).
    public func replaceAll(_ entries: [String: [IPv4Address]]) {
        let normalized = Self.normalized(entries)
        self.entries.withLock { $0 = normalized }
    }

    /// Sets one service's addresses; an empty list removes it.
    public func set(_ addresses: [IPv4Address], forService name: String) {
        let key = name.lowercased()
        entries.withLock { $0[key] = addresses.isEmpty ? nil : addresses }
    }

    public func remove(service name: String) {
        set([], forService: name)
    }

    /// Every entry, by lower-case name.
    public var all: [String: [IPv4Address]] { entries.withLock { $0 } }

    private static func normalized(_ entries: [String: [IPv4Address]]) -> [String: [IPv4Address]] {
        Dictionary(entries.filter { !$0.value.isEmpty }.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
    }
}
