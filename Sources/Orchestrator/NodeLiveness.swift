public import ClusterModel
public import ClusterStore

/// The leader's judgement of which nodes are alive, from their heartbeats: a node that missed
/// `missedPeriods` heartbeat periods is `down`; one heard from again is `ready`.
///
/// Soft state, never replicated: a new leader knows no heartbeats, so it gives every node a fresh grace
/// period of the same length from the moment it took over, instead of declaring them all down (Swarm's
/// dispatcher does the same). Time is a monotonic `Duration` since any origin the shell picks.
public struct NodeLiveness: Sendable {
    public var heartbeatPeriod: Duration
    public var missedPeriods: Int
    private var lastHeard: [NodeID: Duration] = [:]
    private var leaderSince: Duration?

    public init(heartbeatPeriod: Duration = .seconds(1), missedPeriods: Int = 3) {
        self.heartbeatPeriod = heartbeatPeriod
        self.missedPeriods = missedPeriods
    }

    /// How long a node may stay silent before it is down.
    public var timeout: Duration { heartbeatPeriod * missedPeriods }

    /// This controller became the leader at `now`: heartbeats heard before belong to an older reign.
    public mutating func becameLeader(at now: Duration) {
        leaderSince = now
        lastHeard = [:]
    }

    public mutating func lostLeadership() {
        leaderSince = nil
        lastHeard = [:]
    }

    public var isLeading: Bool { leaderSince != nil }

    public mutating func heartbeat(from node: NodeID, at now: Duration) {
        lastHeard[node] = now
    }

    /// When the node was last heard from in this reign.
    public func lastHeartbeat(of node: NodeID) -> Duration? { lastHeard[node] }

    /// A node was removed: forget it.
    public mutating func forget(_ node: NodeID) { lastHeard[node] = nil }

    /// The status each node should have at `now` where it differs from what the store says. Empty unless
    /// leading.
    public func changes(for nodes: [NodeRecord], at now: Duration) -> [(node: NodeID, status: NodeRecord.Status)] {
        guard let leaderSince else { return [] }
        var changes: [(node: NodeID, status: NodeRecord.Status)] = []
        for node in nodes {
            let heard = lastHeard[node.id]
            let alive: Bool
            if let heard, now - heard <= timeout {
                alive = true
            } else if heard == nil, now - leaderSince <= timeout {
                continue  // grace period of a new reign: keep whatever status the node had
            } else {
                alive = false
            }
            let wanted: NodeRecord.Status = alive ? .ready : .down
            if node.status != wanted { changes.append((node.id, wanted)) }
        }
        return changes
    }

    /// Whether most nodes went silent together: at least `disruptionShare` of them (and at least one) unheard
    /// for more than half the timeout. A whole cluster falling silent at once is this leader's own isolation far
    /// more often than every machine failing, so the orchestrator then orphans no task (Kubernetes' node
    /// lifecycle controller stops evicting in the same case). It is judged on silence, not on the store's
    /// statuses, because nodes are marked down one by one as their timeouts pass: the first one marked would
    /// otherwise lose its tasks before the rest follow. False unless leading.
    public func disrupted(_ nodes: [NodeRecord], at now: Duration) -> Bool {
        guard let leaderSince, !nodes.isEmpty else { return false }
        let silent = nodes.filter { node in now - (lastHeard[node.id] ?? leaderSince) > timeout / 2 }.count
        return Double(silent) >= Self.disruptionShare * Double(nodes.count)
    }

    /// The share of silent nodes that makes a disruption (Kubernetes' unhealthy-zone threshold).
    public static let disruptionShare = 0.55
}
