import ClusterModel
import ClusterStore
import Orchestrator
import Testing

@Suite("Node liveness: ready and down from heartbeats")
struct NodeLivenessTests {
    static func node(_ id: String, _ status: NodeRecord.Status) -> NodeRecord {
        NodeRecord(id: NodeID(id), name: id, address: "10.0.0.1", status: status, joinedAtMs: 0)
    }

    static func seconds(_ value: Double) -> Duration { .milliseconds(Int(value * 1000)) }

    @Test("a node that misses three heartbeat periods is down; its next heartbeat makes it ready")
    func missedPeriods() {
        var liveness = NodeLiveness(heartbeatPeriod: .seconds(1))
        liveness.becameLeader(at: .zero)
        var n1 = Self.node("n1", .unknown)
        liveness.heartbeat(from: n1.id, at: Self.seconds(0.5))
        #expect(liveness.changes(for: [n1], at: Self.seconds(0.6)).map(\.status) == [.ready])
        n1.status = .ready
        // Silent from 0.5 s: still ready at 3.5 s, down just after.
        #expect(liveness.changes(for: [n1], at: Self.seconds(3.5)).isEmpty)
        #expect(liveness.changes(for: [n1], at: Self.seconds(3.51)).map(\.status) == [.down])
        n1.status = .down
        liveness.heartbeat(from: n1.id, at: Self.seconds(9))
        #expect(liveness.changes(for: [n1], at: Self.seconds(9)).map(\.status) == [.ready])
    }

    @Test("most nodes silent together is a disruption (the leader is cut off); one silent node among talking ones is not")
    func disruption() {
        var liveness = NodeLiveness(heartbeatPeriod: .seconds(1))
        liveness.becameLeader(at: .zero)
        let nodes = ["n1", "n2", "n3"].map { Self.node($0, .ready) }
        for (offset, node) in nodes.enumerated() { liveness.heartbeat(from: node.id, at: Self.seconds(1 + 0.3 * Double(offset))) }
        #expect(!liveness.disrupted(nodes, at: Self.seconds(2)))
        // All silent since 1.0–1.6 s: when n1 crosses its 3 s timeout (at 4.0 s), n2 and n3 have been silent
        // over 1.5 s too, so the first one marked down is already judged a disruption.
        #expect(liveness.changes(for: nodes, at: Self.seconds(4.01)).map(\.node) == [nodes[0].id])
        #expect(liveness.disrupted(nodes, at: Self.seconds(4.01)))
        // Only n1 silent while the others talk: an ordinary node failure.
        for node in nodes.dropFirst() { liveness.heartbeat(from: node.id, at: Self.seconds(4.5)) }
        #expect(!liveness.disrupted(nodes, at: Self.seconds(5)))
        // Two nodes: one silent is half, below the 55 % share.
        #expect(!liveness.disrupted(Array(nodes.prefix(2)), at: Self.seconds(5)))
        // A follower judges nothing.
        liveness.lostLeadership()
        #expect(!liveness.disrupted(nodes, at: Self.seconds(20)))
    }

    @Test("a new leader gives every node a full grace period instead of declaring them all down")
    func newLeaderGrace() {
        var liveness = NodeLiveness(heartbeatPeriod: .seconds(1))
        let nodes = [Self.node("n1", .ready), Self.node("n2", .ready)]
        liveness.becameLeader(at: Self.seconds(100))
        #expect(liveness.changes(for: nodes, at: Self.seconds(102.9)).isEmpty)
        liveness.heartbeat(from: NodeID("n1"), at: Self.seconds(101))
        liveness.heartbeat(from: NodeID("n1"), at: Self.seconds(102))
        liveness.heartbeat(from: NodeID("n1"), at: Self.seconds(103))
        // n2 never reported to this leader: down once the grace period is over; n1 stays ready.
        let changes = liveness.changes(for: nodes, at: Self.seconds(103.1))
        #expect(changes.map(\.node) == [NodeID("n2")])
        #expect(changes.map(\.status) == [.down])
    }

    @Test("a follower decides nothing, and heartbeats from an earlier reign do not count")
    func onlyTheLeaderDecides() {
        var liveness = NodeLiveness(heartbeatPeriod: .seconds(1))
        let n1 = Self.node("n1", .ready)
        #expect(liveness.changes(for: [n1], at: Self.seconds(50)).isEmpty)
        liveness.becameLeader(at: .zero)
        liveness.heartbeat(from: n1.id, at: Self.seconds(1))
        liveness.lostLeadership()
        liveness.becameLeader(at: Self.seconds(10))
        #expect(liveness.lastHeartbeat(of: n1.id) == nil)
        #expect(liveness.changes(for: [n1], at: Self.seconds(12)).isEmpty)
        #expect(liveness.changes(for: [n1], at: Self.seconds(13.5)).map(\.status) == [.down])
    }
}
