public import ClusterModel
import Crypto
import Foundation

/// The container network of one node: a bridge holding the node subnet's gateway address, a network namespace
/// per task with a veth pair (`eth0` inside, the host end on the bridge) and an address from the node subnet,
/// routes to the other nodes' subnets via their node addresses, and one nftables table (masquerade for traffic
/// leaving the cluster range). Every name starts with the node's prefix, so several agents can share a machine;
/// every step is idempotent, and `sweep(keeping:)` removes what a crash left behind.
///
/// Names, for prefix `fa1b2c3` (at most 7 characters, so interface names stay within Linux's 15):
/// bridge `fa1b2c3br0`; task namespace `fa1b2c3-<task id>` (at `/run/netns/`, for the runtime's config.json);
/// host end of a task's veth `fa1b2c3v<hex offset of its address in the node subnet>`, with the task id as its
/// alias; nftables table `ip fa1b2c3`; routes to other nodes carry protocol `routeProtocol` and the gateway as
/// their source address (so this node's own traffic to other nodes' tasks comes from inside the cluster range).
///
/// The host side (bridge, routes, nftables, ip_forward) lives in the agent's own network namespace, or in
/// `hostNamespace` when set: tests simulate several hosts on one machine that way. Needs root (CAP_NET_ADMIN)
/// and iproute2's `ip` and `nft` (nftables).
public actor NodeNetwork {
    public struct Configuration: Sendable {
        /// Starts every name this node creates: 1–7 characters, lowercase letters and digits (see `prefix(for:)`).
        public var prefix: String
        /// The cluster's container range: traffic within it is routed, traffic beyond it masqueraded.
        public var cluster: IPv4Subnet
        /// The named network namespace (`ip netns`) the node's host side lives in; nil: the agent's own.
        public var hostNamespace: String?
        /// The routing protocol number (`ip route … proto N`) on the routes to other nodes' subnets; with the
        /// gateway as their source address it marks the routes this node owns. Default 241 (unassigned in
        /// iproute2's rt_protos).
        public var routeProtocol: UInt8 = 241

        public init(prefix: String, cluster: IPv4Subnet, hostNamespace: String? = nil) {
            self.prefix = prefix
            self.cluster = cluster
            self.hostNamespace = hostNamespace
        }
    }

    /// Where a task's network is: its address and the namespace its container joins.
    public struct Attachment: Sendable, Hashable {
        public let taskID: String
        public let address: IPv4Address
        /// `/run/netns/<prefix>-<task id>`: `OCIRuntimeConfigBuilder.Request.networkNamespacePath`.
        public let namespacePath: String
        /// The host end of the task's veth pair, on the bridge.
        public let hostInterface: String
    }

    /// A route to another node's subnet, through that node's address (which this node must reach directly:
    /// nodes share an L2 network).
    public struct Route: Sendable, Hashable {
        public let subnet: IPv4Subnet
        public let via: IPv4Address

        public init(subnet: IPv4Subnet, via: IPv4Address) {
            self.subnet = subnet
            self.via = via
        }
    }

    /// What `sweep(keeping:)` removed.
    public struct Sweep: Sendable, Equatable {
        /// Network namespaces of tasks that are not kept.
        public var namespaces: [String] = []
        /// Host ends of the veth pairs of tasks that are not kept.
        public var interfaces: [String] = []
    }

    public nonisolated let configuration: Configuration
    let commands: NetworkCommands
    /// The node subnet, once `setUp` ran.
    private var subnet: IPv4Subnet?

    /// The bridge's name.
    public nonisolated var bridge: String { configuration.prefix + "br0" }
    /// The nftables table's name (family `ip`).
    public nonisolated var table: String { configuration.prefix }

    /// A node's prefix: "f" and 6 hex digits of the SHA-256 of its id (collisions between two nodes sharing a
    /// machine are a 1 in 16 million chance).
    public static func prefix(for node: NodeID) -> String {
        "f" + SHA256.hash(data: Data(node.rawValue.utf8)).prefix(3).map { String(format: "%02x", $0) }.joined()
    }

    /// Checks the prefix and finds `ip` and `nft`.
    public init(_ configuration: Configuration) throws(NodeNetworkError) {
        let prefix = configuration.prefix
        guard (1...7).contains(prefix.count), prefix.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber) }) else {
            throw NodeNetworkError(
                .invalidArgument,
                "node network prefix '\(prefix)' must be 1 to 7 lowercase letters or digits (interface names have at most 15 characters)")
        }
        self.configuration = configuration
        commands = try NetworkCommands(hostNamespace: configuration.hostNamespace)
    }

    // MARK: - The node

    /// Creates (or brings back) the bridge with the subnet's gateway address, turns on IPv4 forwarding, and
    /// writes the nftables table: tasks' traffic to destinations outside the cluster range is masqueraded;
    /// forwarding between the bridge and the cluster range is accepted (counted). Idempotent; a changed subnet
    /// replaces the old one's address (and the routes that used it).
    public func setUp(subnet: IPv4Subnet) async throws(NodeNetworkError) {
        guard configuration.cluster.contains(subnet), subnet.prefixLength <= SubnetAllocator.longestNodePrefixLength else {
            throw NodeNetworkError(
                .invalidArgument, "node subnet \(subnet) is not a /30-or-larger part of the cluster range \(configuration.cluster)")
        }
        try await commands.host("turn on IPv4 forwarding", "/bin/sh", ["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        if !(await commands.succeeds(commands.hostIP(["link", "show", "dev", bridge]))) {
            try await commands.hostIP("create bridge \(bridge)", ["link", "add", "name", bridge, "type", "bridge"])
        }
        let gateway = TaskAddressAllocator.gateway(of: subnet)
        try await commands.assignOnly(gateway, prefixLength: subnet.prefixLength, device: bridge, namespace: configuration.hostNamespace)
        try await commands.hostIP("bring bridge \(bridge) up", ["link", "set", "dev", bridge, "up"])
        try await commands.nft("write nftables table ip \(table)", Self.ruleset(table: table, bridge: bridge, subnet: subnet, cluster: configuration.cluster))
        self.subnet = subnet
    }

    /// The nftables table, replaced atomically: creating it empty first makes the delete succeed on a first run.
    static func ruleset(table: String, bridge: String, subnet: IPv4Subnet, cluster: IPv4Subnet) -> String {
        """
        table ip \(table) {}
        delete table ip \(table)
        table ip \(table) {
        \tchain postrouting {
        \t\ttype nat hook postrouting priority srcnat; policy accept;
        \t\tip saddr \(subnet) ip daddr != \(cluster) counter masquerade comment "tasks reaching beyond the cluster"
        \t}
        \tchain forward {
        \t\ttype filter hook forward priority filter; policy accept;
        \t\tiifname "\(bridge)" ip daddr \(cluster) counter accept comment "tasks to the cluster"
        \t\toifname "\(bridge)" ip saddr \(cluster) counter accept comment "the cluster to tasks"
        \t}
        }

        """
    }

    /// Makes the routes to other nodes' subnets exactly `routes`: adds what is missing, removes what is stale.
    /// Only routes this node added are touched (protocol `routeProtocol`, source its gateway); a route to this
    /// node's own subnet is skipped, so callers may pass every node.
    public func setRoutes(_ routes: [Route]) async throws(NodeNetworkError) {
        let subnet = try setUpSubnet()
        let gateway = TaskAddressAllocator.gateway(of: subnet)
        var wanted: [IPv4Subnet: IPv4Address] = [:]
        for route in routes where route.subnet != subnet {
            guard configuration.cluster.contains(route.subnet), !route.subnet.overlaps(subnet) else {
                throw NodeNetworkError(.invalidArgument, "route to \(route.subnet): not another node's subnet of the cluster range \(configuration.cluster)")
            }
            if let other = wanted[route.subnet], other != route.via {
                throw NodeNetworkError(.invalidArgument, "route to \(route.subnet) given twice, via \(other) and via \(route.via)")
            }
            wanted[route.subnet] = route.via
        }
        let existing = try await ownRoutes(source: gateway)
        let proto = String(configuration.routeProtocol)
        for route in existing where wanted[route.subnet] != route.via {
            try await remove(route)
        }
        let present = Set(existing)
        for (destination, via) in wanted.sorted(by: { $0.key < $1.key }) where !present.contains(Route(subnet: destination, via: via)) {
            try await commands.hostIP(
                "add a route to \(destination) via \(via)",
                ["route", "add", "\(destination)", "via", "\(via)", "proto", proto, "src", "\(gateway)"],
                hint: [
                    "File exists": "a route to \(destination) exists that this node did not add; remove it, or choose a cluster range the machine does not route",
                    "Nexthop has invalid gateway": "\(via) is not directly reachable: nodes must share an L2 network",
                    "Network is unreachable": "\(via) is not directly reachable: nodes must share an L2 network",
                ])
        }
    }

    /// Removes the routes, every task's namespace and veth, the nftables table and the bridge. Idempotent.
    /// IPv4 forwarding stays on (other software on the machine may rely on it).
    public func tearDown() async throws(NodeNetworkError) {
        _ = try await sweep(keeping: [])
        // Routes carry the gateway as their source; without setUp in this process, the bridge's address is it.
        var sources = try await bridgeAddresses()
        if let subnet { sources.append(TaskAddressAllocator.gateway(of: subnet)) }
        for source in Set(sources) {
            for route in try await ownRoutes(source: source) {
                try await remove(route)
            }
        }
        try await commands.nft("remove nftables table ip \(table)", "table ip \(table) {}\ndelete table ip \(table)\n")
        try await commands.hostIP("remove bridge \(bridge)", ["link", "del", "dev", bridge], toleratingAbsence: true)
        subnet = nil
    }

    // MARK: - Tasks

    /// Gives `taskID` its network: a namespace `<prefix>-<task id>` whose `eth0` (one end of a veth pair, the
    /// other on the bridge) holds `address`, with `lo` up and a default route via the gateway. Idempotent: what
    /// is already right is kept (a running container is not disturbed), what is wrong or half made is redone.
    public func attach(taskID: String, address: IPv4Address) async throws(NodeNetworkError) -> Attachment {
        let subnet = try setUpSubnet()
        try Self.check(taskID: taskID)
        guard let offset = subnet.offset(of: address), offset >= 2, offset < subnet.size - 1 else {
            throw NodeNetworkError(.invalidArgument, "\(address) is no task address of the node subnet \(subnet) (network, gateway and broadcast are reserved)")
        }
        let namespace = namespaceName(taskID)
        let veth = configuration.prefix + "v" + String(offset, radix: 16)
        let inside = ["-n", namespace]

        // A namespace made here holds nothing yet, so what it lacks is not asked about, and its inside is set up
        // in one `ip -batch` (process spawns are most of an attach's time).
        var fresh = false
        if !(await commands.succeeds(commands.ip(inside + ["link", "show", "dev", "lo"]))) {
            // Missing, or a leftover name without a namespace behind it.
            try await removeNamespace(namespace)
            try await commands.ip("create network namespace \(namespace)", ["netns", "add", namespace])
            fresh = true
        }
        let insideEnd = fresh ? false : await commands.succeeds(commands.ip(inside + ["link", "show", "dev", "eth0"]))
        let hostEnd = fresh ? false : try await hostLinks().contains { $0.ifname == veth && $0.ifalias == taskID }
        if !(insideEnd && hostEnd) {
            if !fresh {
                try await commands.ip("remove a half-made veth in \(namespace)", inside + ["link", "del", "dev", "eth0"], toleratingAbsence: true)
            }
            try await removeInterface(veth)
            try await commands.hostIP(
                "create veth pair \(veth) for task \(taskID)",
                ["link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace])
        }
        try await commands.hostIP("put \(veth) on bridge \(bridge)", ["link", "set", "dev", veth, "alias", taskID, "master", bridge, "up"])
        let gateway = TaskAddressAllocator.gateway(of: subnet)
        let route = ["route", "replace", "default", "via", "\(gateway)", "dev", "eth0"]
        if fresh {
            try await commands.ipBatch("set up eth0 (\(address)/\(subnet.prefixLength), default route via \(gateway)) in \(namespace)", [
                ["link", "set", "dev", "lo", "up"], ["address", "add", "\(address)/\(subnet.prefixLength)", "dev", "eth0"],
                ["link", "set", "dev", "eth0", "up"], route,
            ], namespace: namespace)
        } else {
            try await commands.ip("bring lo up in \(namespace)", inside + ["link", "set", "dev", "lo", "up"])
            try await commands.assignOnly(address, prefixLength: subnet.prefixLength, device: "eth0", namespace: namespace)
            try await commands.ip("bring eth0 up in \(namespace)", inside + ["link", "set", "dev", "eth0", "up"])
            try await commands.ip("add the default route via \(gateway) in \(namespace)", inside + route)
        }
        return Attachment(taskID: taskID, address: address, namespacePath: "/run/netns/" + namespace, hostInterface: veth)
    }

    /// Removes the task's namespace and veth pair; nothing to do when they are gone already.
    public func detach(taskID: String) async throws(NodeNetworkError) {
        try Self.check(taskID: taskID)
        // The host end first: deleting it removes the pair at once, while a namespace goes asynchronously (or
        // not at all while a process still holds it).
        for link in try await hostLinks() where isTaskInterface(link.ifname) && link.ifalias == taskID {
            try await removeInterface(link.ifname)
        }
        let namespace = namespaceName(taskID)
        try await removeNamespace(namespace)
    }

    /// Removes every task namespace and veth with this node's prefix whose task is not in `keeping`: what a
    /// crash left behind. Returns what it removed.
    public func sweep(keeping: Set<String>) async throws(NodeNetworkError) -> Sweep {
        var removed = Sweep()
        // Host ends first, as in `detach`.
        for link in try await hostLinks() where isTaskInterface(link.ifname) && !keeping.contains(link.ifalias ?? "") {
            try await removeInterface(link.ifname)
            removed.interfaces.append(link.ifname)
        }
        for namespace in try await namespaces() {
            guard let taskID = taskID(ofNamespace: namespace), !keeping.contains(taskID) else { continue }
            try await removeNamespace(namespace)
            removed.namespaces.append(namespace)
        }
        return removed
    }

    /// The tasks that have a namespace of this node, with the address their `eth0` holds (nil when it has none):
    /// after an agent restart, what the task address allocator is rebuilt from.
    public func attachments() async throws(NodeNetworkError) -> [String: IPv4Address?] {
        var found: [String: IPv4Address?] = [:]
        for namespace in try await namespaces() {
            guard let taskID = taskID(ofNamespace: namespace) else { continue }
            let addresses = (try? await commands.addresses(device: "eth0", namespace: namespace)) ?? []
            found[taskID] = addresses.first?.address
        }
        return found
    }

    // MARK: - Names

    /// The task's network namespace name.
    public nonisolated func namespaceName(_ taskID: String) -> String { configuration.prefix + "-" + taskID }

    private nonisolated func taskID(ofNamespace name: String) -> String? {
        let start = configuration.prefix + "-"
        guard name.hasPrefix(start), name.count > start.count else { return nil }
        return String(name.dropFirst(start.count))
    }

    /// `<prefix>v<hex>`: another node's names never match, since its prefix is followed by more than hex digits.
    private nonisolated func isTaskInterface(_ name: String) -> Bool {
        let start = configuration.prefix + "v"
        guard name.hasPrefix(start), name.count > start.count else { return false }
        return name.dropFirst(start.count).allSatisfy(\.isHexDigit)
    }

    /// Task ids become file names under /run/netns: letters, digits, '.', '_' and '-', at most 200 characters.
    static func check(taskID: String) throws(NodeNetworkError) {
        let allowed = taskID.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
        guard !taskID.isEmpty, taskID.count <= 200, allowed, !taskID.hasPrefix(".") else {
            throw NodeNetworkError(.invalidArgument, "task id '\(taskID)' cannot name a network namespace (letters, digits, '.', '_', '-')")
        }
    }

    // MARK: - Removing (nothing to do when it is gone already)

    private func remove(_ route: Route) async throws(NodeNetworkError) {
        try await commands.hostIP(
            "remove the route to \(route.subnet) via \(route.via)",
            ["route", "del", "\(route.subnet)", "via", "\(route.via)", "proto", String(configuration.routeProtocol)],
            toleratingAbsence: true)
    }

    private func removeInterface(_ name: String) async throws(NodeNetworkError) {
        try await commands.hostIP("remove interface \(name)", ["link", "del", "dev", name], toleratingAbsence: true)
    }

    private func removeNamespace(_ name: String) async throws(NodeNetworkError) {
        try await commands.ip("remove network namespace \(name)", ["netns", "del", name], toleratingAbsence: true)
    }

    // MARK: - Reading the host's state

    private func setUpSubnet() throws(NodeNetworkError) -> IPv4Subnet {
        guard let subnet else {
            throw NodeNetworkError(.notSetUp, "the node network \(configuration.prefix) is not set up: call setUp(subnet:) first")
        }
        return subnet
    }

    private func hostLinks() async throws(NodeNetworkError) -> [NetworkCommands.Link] {
        try await commands.json("list interfaces", commands.hostIP(["-j", "link", "show"]))
    }

    private func namespaces() async throws(NodeNetworkError) -> [String] {
        let listed: [NetworkCommands.Namespace] = try await commands.json("list network namespaces", commands.ip(["-j", "netns", "list"]))
        return listed.map(\.name)
    }

    /// The routes this node added (its protocol, `source` as their source address).
    private func ownRoutes(source: IPv4Address) async throws(NodeNetworkError) -> [Route] {
        let listed: [NetworkCommands.RouteEntry] = try await commands.json(
            "list routes", commands.hostIP(["-j", "route", "show", "proto", String(configuration.routeProtocol)]))
        return listed.compactMap { entry in
            guard entry.prefsrc == "\(source)", let gateway = entry.gateway.flatMap(IPv4Address.init),
                  let subnet = try? IPv4Subnet(parsing: entry.dst) else { return nil }
            return Route(subnet: subnet, via: gateway)
        }
    }

    private func bridgeAddresses() async throws(NodeNetworkError) -> [IPv4Address] {
        guard await commands.succeeds(commands.hostIP(["link", "show", "dev", bridge])) else { return [] }
        return try await commands.addresses(device: bridge, namespace: configuration.hostNamespace).map(\.address)
    }
}

/// Why the node network could not be changed, with what to do about it.
public struct NodeNetworkError: Error, Sendable, Equatable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// The agent lacks the privilege (root, CAP_NET_ADMIN).
        public static let permissionDenied = Code(name: "permission denied")
        /// `ip` or `nft` is not installed.
        public static let toolMissing = Code(name: "tool missing")
        /// A command failed for another reason (its output is in the message).
        public static let commandFailed = Code(name: "command failed")
        /// A task id, address, subnet, route or prefix that cannot be used.
        public static let invalidArgument = Code(name: "invalid argument")
        /// A task was attached or routes set before `setUp(subnet:)`.
        public static let notSetUp = Code(name: "not set up")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension NodeNetwork {
    /// Makes every address of `subnet` (the service network) local to this network namespace (`ip route
    /// replace local SUBNET dev lo`), so the load balancer can listen on any virtual IP and containers reach
    /// them through their gateway, with one route instead of an address per service.
    public static func routeLocally(_ subnet: IPv4Subnet) async throws(NodeNetworkError) {
        let commands = try NetworkCommands(hostNamespace: nil)
        try await commands.ip("route the service network \(subnet) to this node", ["route", "replace", "local", "\(subnet)", "dev", "lo"])
    }

    /// Removes that route again (agent exit).
    public static func unrouteLocally(_ subnet: IPv4Subnet) async {
        guard let commands = try? NetworkCommands(hostNamespace: nil) else { return }
        try? await commands.ip("remove the service network route", ["route", "del", "local", "\(subnet)", "dev", "lo"], toleratingAbsence: true)
    }
}
