public import ClusterModel
import Foundation
public import Messages
#if canImport(Glibc)
import Glibc
#endif

/// The node's container network as the agent runs it: set up from the leader's view (this node's subnet, the
/// other nodes' subnets and addresses), and an address plus a network namespace for every task that does not
/// share the host's network. Addresses are handed out here (`TaskAddressAllocator`) and rebuilt from what is
/// attached when the agent starts again.
public actor ContainerNetwork {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    private let prefix: String
    private let hostNamespace: String?
    private var network: NodeNetwork?
    private var addresses: TaskAddressAllocator?
    private var attached: [String: NodeNetwork.Attachment] = [:]
    /// Addresses of tasks attached by an earlier agent process (found when the network is set up again).
    private var claimed: [String: IPv4Address] = [:]

    /// `hostNamespace`: run the host side inside that named namespace (tests); nil: where the agent runs.
    public init(node: NodeID, hostNamespace: String? = nil) {
        self.prefix = NodeNetwork.prefix(for: node)
        self.hostNamespace = hostNamespace
    }

    /// This node's subnet, once the leader gave one.
    public var subnet: IPv4Subnet? { addresses?.subnet }

    /// The bridge's address on this node's subnet, once the leader gave one: containers route through it, and the
    /// node's DNS responder listens on it (their resolv.conf names it).
    public var gateway: IPv4Address? { subnet.map(TaskAddressAllocator.gateway(of:)) }

    /// Applies the leader's view. The first subnet sets the network up (a later, different one is refused: the
    /// store never moves a node); routes are kept exactly as given, except those through this host itself (nodes
    /// sharing one machine reach each other's bridges directly).
    public func configure(subnet text: String, clusterNetwork: String, routes: [(subnet: String, via: String)]) async throws {
        guard !text.isEmpty else { return }
        let subnet = try parse(text, what: "the node's subnet")
        if let current = addresses?.subnet, current != subnet {
            throw Failure("the leader moved this node from subnet \(current) to \(subnet); containers keep \(current) until the agent restarts")
        }
        if network == nil {
            let cluster = try parse(clusterNetwork.isEmpty ? text : clusterNetwork, what: "the cluster network")
            let network = try NodeNetwork(NodeNetwork.Configuration(prefix: prefix, cluster: cluster, hostNamespace: hostNamespace))
            try await network.setUp(subnet: subnet)
            // Tasks still attached from before a restart keep their addresses.
            var allocator = try TaskAddressAllocator(subnet: subnet)
            for case let (task, address?) in try await network.attachments() {
                try? allocator.claim(address)
                claimed[task] = address
            }
            self.network = network
            self.addresses = allocator
        }
        let local = Self.localAddresses()
        var wanted: [NodeNetwork.Route] = []
        for route in routes where !local.contains(route.via) && !route.via.hasPrefix("127.") {
            guard let via = IPv4Address(route.via), let other = try? IPv4Subnet(parsing: route.subnet) else { continue }
            wanted.append(NodeNetwork.Route(subnet: other, via: via))
        }
        try await network?.setRoutes(wanted)
    }

    /// Applies the network part of a session update (when it carries one).
    public func configure(_ update: Flotilla_V1_SessionUpdate) async throws {
        guard update.networkChanged else { return }
        try await configure(subnet: update.subnet, clusterNetwork: update.clusterNetwork, routes: update.routes.map { ($0.subnet, $0.via) })
    }

    /// Gives the task an address on this node's subnet and a network namespace holding it.
    public func attach(taskID: String) async throws -> NodeNetwork.Attachment {
        if let existing = attached[taskID] { return existing }
        guard let network, var allocator = addresses else {
            throw Failure("this node has no container network yet (the leader has not given it a subnet); run the service with --network host, or wait for the agent's session")
        }
        let address = try allocator.allocate()
        addresses = allocator
        do {
            let attachment = try await network.attach(taskID: taskID, address: address)
            attached[taskID] = attachment
            return attachment
        } catch {
            addresses?.release(address)
            throw error
        }
    }

    /// Removes the task's namespace and veth and frees its address (nothing to do when it has none).
    public func detach(taskID: String) async {
        let address = attached.removeValue(forKey: taskID)?.address ?? claimed.removeValue(forKey: taskID)
        try? await network?.detach(taskID: taskID)
        if let address { addresses?.release(address) }
    }

    /// The address of a task an earlier agent process attached (its container is being adopted).
    public func adoptedAddress(taskID: String) -> String? {
        (attached[taskID]?.address ?? claimed[taskID]).map { "\($0)" }
    }

    /// Removes every namespace and veth of this node whose task is not in `keeping` (what a crash left).
    @discardableResult
    public func sweep(keeping: Set<String>) async throws -> NodeNetwork.Sweep {
        guard let network else { return NodeNetwork.Sweep() }
        let swept = try await network.sweep(keeping: keeping)
        for (task, attachment) in attached where !keeping.contains(task) {
            attached[task] = nil
            addresses?.release(attachment.address)
        }
        return swept
    }

    /// Removes the bridge, routes and firewall table (the agent is stopping and no task runs).
    public func tearDown() async {
        try? await network?.tearDown()
        network = nil
        addresses = nil
        attached = [:]
    }

    private func parse(_ text: String, what: String) throws -> IPv4Subnet {
        do {
            return try IPv4Subnet(parsing: text)
        } catch {
            throw Failure("\(what) '\(text)' from the leader is not a subnet: \(error)")
        }
    }

    /// The IPv4 addresses of this host's interfaces (in the namespace the agent runs in).
    static func localAddresses() -> Set<String> {
        var result: Set<String> = []
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return result }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            if let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET) {
                var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { ipv4 in
                    var raw = ipv4.pointee.sin_addr
                    _ = inet_ntop(AF_INET, &raw, &buffer, socklen_t(INET_ADDRSTRLEN))
                }
                result.insert(String(cString: buffer))
            }
            cursor = entry.pointee.ifa_next
        }
        return result
    }
}
