import ClusterModel
import ClusterStore
import Testing

@Suite("Join tokens and the nodes table")
struct NodeAndTokenTableTests {
    static let hour: UInt64 = 3_600_000
    static let hash = [UInt8](repeating: 7, count: 32)

    static func token(_ id: String = "tok1abcd", role: NodeRole = .agent, maxUses: UInt32 = 0) -> JoinTokenRecord {
        JoinTokenRecord(id: id, role: role, secretSHA256: hash, createdAtMs: 1_000, expiresAtMs: 1_000 + 24 * hour, maxUses: maxUses)
    }

    static func node(_ id: String, name: String) -> NodeRecord {
        NodeRecord(id: NodeID(id), name: name, labels: ["zone": "a"], address: "10.0.0.7", joinedAtMs: 2_000, agentVersion: "0.1.0")
    }

    static func join(_ token: String = "tok1abcd", at now: UInt64 = 2_000, id: String, role: NodeRole = .agent, name: String? = nil) -> [UInt8] {
        ClusterCommands.nodeJoin(
            tokenID: token, nowMs: now, nodeID: NodeID(id), role: role,
            node: role == .agent ? node(id, name: name ?? id) : nil)
    }

    static func refusal(_ outcome: ApplyOutcome) -> String? {
        if case .invalid(let message) = outcome.result { message } else { nil }
    }

    @Test("a join consumes one use of its token and adds the agent's record, atomically")
    func joinConsumesAUse() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Self.token(maxUses: 2)))
        let outcome = try log.run(Self.join(id: "n1"))
        #expect(outcome.result == .ok(index: 2))
        #expect(outcome.changes.map(\.table) == [.tokens, .nodes, .events])
        #expect(log.state.token("tok1abcd")?.used == 1)
        // The store gives the node the lowest free subnet of the container network.
        var joined = Self.node("n1", name: "n1")
        joined.subnet = "10.240.0.0/24"
        #expect(log.state.node(NodeID("n1")) == joined)
        try log.run(Self.join(id: "n2"))
        #expect(log.state.node(NodeID("n2"))?.subnet == "10.240.1.0/24")
        // Used up: the third join is refused and changes nothing.
        let third = try log.run(Self.join(id: "n3"))
        #expect(Self.refusal(third)?.contains("used 2 of 2 times") == true)
        #expect(log.state.node(NodeID("n3")) == nil)
        #expect(log.state.token("tok1abcd")?.used == 2)
    }

    @Test("expired, revoked, unknown and wrong-role tokens are refused with what to do")
    func refusals() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Self.token()))
        let expired = try log.run(Self.join(at: 1_000 + 25 * Self.hour, id: "n1"))
        #expect(Self.refusal(expired)?.contains("expired 60 min ago") == true)
        let wrongRole = try log.run(Self.join(id: "c9", role: .controller))
        #expect(Self.refusal(wrongRole)?.contains("is for agents") == true)
        let unknown = try log.run(Self.join("nosuchid", id: "n1"))
        #expect(Self.refusal(unknown)?.contains("does not exist") == true)
        try log.run(ClusterCommands.tokenRevoke(id: "tok1abcd"))
        let revoked = try log.run(Self.join(id: "n1"))
        #expect(Self.refusal(revoked)?.contains("was revoked") == true)
        #expect(try log.run(ClusterCommands.tokenRevoke(id: "nosuchid")).result == .notFound)
        #expect(log.state.nodes.isEmpty)
    }

    @Test("a controller's join consumes a use and adds no node record")
    func controllerJoin() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Self.token("ctl1abcd", role: .controller)))
        #expect(try log.run(Self.join("ctl1abcd", id: "c2", role: .controller)).result == .ok(index: 2))
        #expect(log.state.nodes.isEmpty)
        #expect(log.state.token("ctl1abcd")?.used == 1)
    }

    @Test("node names and ids are unique; a removed node's id is revoked for good")
    func uniquenessAndRevocation() throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Self.token()))
        try log.run(Self.join(id: "n1", name: "web-1"))
        #expect(Self.refusal(try log.run(Self.join(id: "n2", name: "web-1")))?.contains("taken by node n1") == true)
        #expect(Self.refusal(try log.run(Self.join(id: "n1", name: "web-2")))?.contains("already taken") == true)
        let removal = try log.run(ClusterCommands.nodeRemove(id: NodeID("n1"), nowMs: 5_000))
        #expect(removal.changes.map(\.table) == [.nodes, .revokedNodes, .events])
        #expect(log.state.isRevoked(NodeID("n1")))
        #expect(log.state.node(NodeID("n1")) == nil)
        // The id cannot come back, not even through a fresh join.
        #expect(Self.refusal(try log.run(Self.join(id: "n1", name: "web-1")))?.contains("already taken") == true)
        // Controllers are revoked the same way (they are not in the nodes table).
        #expect(try log.run(ClusterCommands.nodeRemove(id: NodeID("c2"), nowMs: 6_000)).changes.map(\.table) == [.revokedNodes])
    }

    @Test("upserts change status and availability of existing nodes only; bad records are refused", arguments: [
        ("bad name", NodeRecord(id: NodeID("n1"), name: "-web", address: "10.0.0.7", joinedAtMs: 1)),
        ("bad address", NodeRecord(id: NodeID("n1"), name: "web", address: "10.0.0.300", joinedAtMs: 1)),
        ("bad label", NodeRecord(id: NodeID("n1"), name: "web", labels: ["zone": "a,b"], address: "10.0.0.7", joinedAtMs: 1)),
    ])
    func upserts(_ case: String, bad: NodeRecord) throws {
        var log = Log()
        try log.run(ClusterCommands.tokenCreate(Self.token()))
        try log.run(Self.join(id: "n1", name: "web"))
        var down = try #require(log.state.node(NodeID("n1")))
        down.status = .down
        down.availability = .drain
        down.statusChangedAtMs = 9_000
        #expect(try log.run(ClusterCommands.nodeUpsert(down)).result == .ok(index: 3))
        #expect(log.state.node(NodeID("n1")) == down)
        #expect(Self.refusal(try log.run(ClusterCommands.nodeUpsert(bad))) != nil, "\(`case`)")
        #expect(try log.run(ClusterCommands.nodeUpsert(Self.node("n9", name: "other"))).result == .notFound)
    }

    @Test("IPv6 node addresses are accepted", arguments: ["fd00::1", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"])
    func ipv6(_ address: String) throws {
        #expect(throws: Never.self) {
            try NodeRecord(id: NodeID("n1"), name: "v6", address: address, joinedAtMs: 1).validate()
        }
    }

    @Test("the cluster CA is set once; the same CA again is a no-op, another is refused")
    func clusterCA() throws {
        var log = Log()
        let ca = ClusterCARecord(certificateDER: [1, 2, 3], privateKeyDER: [4, 5])
        #expect(try log.run(ClusterCommands.clusterCASet(ca)).changes.map(\.table) == [.ca])
        #expect(try log.run(ClusterCommands.clusterCASet(ca)).changes.isEmpty)
        #expect(Self.refusal(try log.run(ClusterCommands.clusterCASet(ClusterCARecord(certificateDER: [9], privateKeyDER: [9])))) != nil)
        #expect(log.state.ca == ca)
    }

    @Test("nodes, tokens, revocations and the CA survive a snapshot round trip byte for byte")
    func snapshotRoundTrip() throws {
        var log = Log()
        try log.run(ClusterCommands.clusterCASet(ClusterCARecord(certificateDER: [1], privateKeyDER: [2])))
        try log.run(ClusterCommands.tokenCreate(Self.token()))
        try log.run(Self.join(id: "n1", name: "a"))
        try log.run(Self.join(id: "n2", name: "b"))
        try log.run(ClusterCommands.nodeRemove(id: NodeID("n2"), nowMs: 3_000))
        let bytes = log.state.snapshot()
        let restored = try ClusterState(snapshot: bytes)
        #expect(restored == log.state)
        #expect(restored.snapshot() == bytes)
    }
}
