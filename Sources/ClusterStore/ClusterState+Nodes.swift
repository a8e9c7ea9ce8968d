public import ClusterModel
internal import Messages

// MARK: - Nodes and join tokens: NodeJoin, NodeUpsert, NodeRemove, TokenCreate, TokenRevoke, ClusterCASet

extension ClusterState {
    mutating func applyNodeJoin(_ join: Flotilla_V1_NodeJoin, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard var token = tokenTable[join.tokenID] else {
            return .invalid("join token \(quoted(join.tokenID, limit: 40)) does not exist; ask an admin for a new one (flotilla token create)")
        }
        if let refusal = token.refusal(atMs: join.nowMs) { return .invalid(refusal) }
        guard join.role == token.role.rawValue else {
            return .invalid("join token \(token.id) is for \(token.role.rawValue)s; this node asked to join as \(quoted(join.role, limit: 20))")
        }
        if let problem = NodeRecord.idProblem(join.nodeID, kind: "node") { return .invalid(problem) }
        let id = NodeID(join.nodeID)
        guard nodeTable[id] == nil, controllerTable[id] == nil, revokedTable[id] == nil else {
            return .invalid("node id \(id) is already taken")
        }
        var node: NodeRecord?
        switch token.role {
        case .agent:
            guard join.hasNode, let record = NodeRecord(proto: join.node) else {
                return .invalid("an agent's join must carry its node record")
            }
            guard record.id == id else { return .invalid("the node record's id \(record.id) is not the joining node's id \(id)") }
            if let problem = record.problem { return .invalid(problem) }
            if let holder = nodeNamed(record.name) {
                return .invalid("node name \(record.name) is taken by node \(holder.id); choose another with --name")
            }
            node = record
        default:
            guard !join.hasNode else { return .invalid("a controller's join carries no node record") }
        }
        token.used += 1
        tokenTable[token.id] = token
        changes.append(StoreChange(table: .tokens, key: token.id, kind: .put, index: index))
        if var node {
            node.subnet = freeSubnet()
            nodeTable[id] = node
            changes.append(StoreChange(table: .nodes, key: id.rawValue, kind: .put, index: index))
        }
        return .ok(index: index)
    }

    /// The cluster's container network: every agent gets a /24 of it for its containers.
    public static let containerNetwork = "10.240.0.0/12"
    public static let nodeSubnetPrefixLength = 24
    /// The service network: every service gets a virtual IP from it (apart from the container network, so a
    /// virtual IP is never a task's address).
    public static let serviceNetwork = "10.96.0.0/16"

    /// The lowest node subnet no node holds; empty when the network is used up (the node then runs no
    /// containers on their own network, and says so).
    func freeSubnet() -> String {
        let taken = nodeTable.values.compactMap { try? IPv4Subnet(parsing: $0.subnet) }
        guard var allocator = try? SubnetAllocator(
            cluster: IPv4Subnet(parsing: Self.containerNetwork), nodePrefixLength: Self.nodeSubnetPrefixLength, allocated: taken),
            let subnet = try? allocator.allocate() else { return "" }
        return subnet.description
    }

    mutating func applyNodeUpsert(_ upsert: Flotilla_V1_NodeUpsert, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard upsert.hasNode, let proposed = NodeRecord(proto: upsert.node) else {
            return .invalid("a NodeUpsert command must carry a node record")
        }
        if let problem = proposed.problem { return .invalid(problem) }
        guard let existing = nodeTable[proposed.id] else { return .notFound }
        // The subnet is the store's to give: kept as it is, or given to a node that joined before there were any.
        var record = proposed
        record.subnet = existing.subnet.isEmpty ? freeSubnet() : existing.subnet
        if let holder = nodeNamed(record.name), holder.id != record.id {
            return .invalid("node name \(record.name) is taken by node \(holder.id)")
        }
        guard nodeTable[record.id] != record else { return .ok(index: index) }
        nodeTable[record.id] = record
        changes.append(StoreChange(table: .nodes, key: record.id.rawValue, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyNodeRemove(_ remove: Flotilla_V1_NodeRemove, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        if let problem = NodeRecord.idProblem(remove.id, kind: "node") { return .invalid(problem) }
        let id = NodeID(remove.id)
        if nodeTable.removeValue(forKey: id) != nil {
            changes.append(StoreChange(table: .nodes, key: remove.id, kind: .delete, index: index))
        }
        if revokedTable[id] == nil {
            revokedTable[id] = RevokedNode(id: id, revokedAtMs: remove.nowMs)
            changes.append(StoreChange(table: .revokedNodes, key: remove.id, kind: .put, index: index))
        }
        return .ok(index: index)
    }

    mutating func applyTokenCreate(_ create: Flotilla_V1_TokenCreate, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard create.hasToken, let token = JoinTokenRecord(proto: create.token) else {
            return .invalid("a TokenCreate command must carry a token record with a known role")
        }
        if let problem = token.problem { return .invalid(problem) }
        guard tokenTable[token.id] == nil else { return .invalid("join token id \(token.id) already exists") }
        tokenTable[token.id] = token
        changes.append(StoreChange(table: .tokens, key: token.id, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyTokenRevoke(_ revoke: Flotilla_V1_TokenRevoke, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard var token = tokenTable[revoke.id] else { return .notFound }
        guard !token.revoked else { return .ok(index: index) }
        token.revoked = true
        tokenTable[token.id] = token
        changes.append(StoreChange(table: .tokens, key: token.id, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyClusterCASet(_ set: Flotilla_V1_ClusterCASet, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard set.hasCa, !set.ca.certificateDer.isEmpty, !set.ca.privateKeyDer.isEmpty else {
            return .invalid("a ClusterCASet command must carry a CA certificate and key")
        }
        let ca = ClusterCARecord(proto: set.ca)
        if let current = caRecord {
            return current == ca ? .ok(index: index) : .invalid("the cluster already has a CA; a different one cannot replace it")
        }
        caRecord = ca
        changes.append(StoreChange(table: .ca, key: "ca", kind: .put, index: index))
        return .ok(index: index)
    }

    private func nodeNamed(_ name: String) -> NodeRecord? {
        nodeTable.values.first { $0.name == name }
    }
}

// MARK: - Reading

extension ClusterState {
    /// The node with id `id`, if the nodes table has it.
    public func node(_ id: NodeID) -> NodeRecord? { nodeTable[id] }

    /// Every node, sorted by id.
    public var nodes: [NodeRecord] {
        nodeTable.values.sorted { $0.id.rawValue.utf8.lexicographicallyPrecedes($1.id.rawValue.utf8) }
    }

    /// The join token with id `id`.
    public func token(_ id: String) -> JoinTokenRecord? { tokenTable[id] }

    /// Every join token, sorted by id.
    public var tokens: [JoinTokenRecord] {
        tokenTable.values.sorted { $0.id.utf8.lexicographicallyPrecedes($1.id.utf8) }
    }

    /// True when `id`'s identity was revoked: its certificate must be refused.
    public func isRevoked(_ id: NodeID) -> Bool { revokedTable[id] != nil }

    /// Every revoked node id, sorted.
    public var revokedNodes: [RevokedNode] {
        revokedTable.values.sorted { $0.id.rawValue.utf8.lexicographicallyPrecedes($1.id.rawValue.utf8) }
    }

    /// The cluster CA, once installed.
    public var ca: ClusterCARecord? { caRecord }
}
