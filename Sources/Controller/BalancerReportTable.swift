import ClusterModel
import Wire

/// The leader's soft state of the nodes' load-balancer reports: the latest per node, when it came, and whether
/// the session that brought it is still open. Not in Raft: a new leader has it again from the agents' next
/// sessions. A report outlives its session by `retention` (marked not connected), so a node that just lost its
/// session still shows its last numbers; then it is dropped. Time comes in as an offset from a fixed origin.
///
/// `lb stats` reads it now; the autoscaler (issue 8) sums the backends' counters over the nodes from it.
struct BalancerReportTable: Sendable {
    struct Entry: Sendable, Equatable {
        var report: Flotilla_V1_BalancerReport
        var receivedAt: Duration
        /// When the node's last session ended; nil while one is open.
        var sessionEndedAt: Duration?

        var connected: Bool { sessionEndedAt == nil }
    }

    /// How long a report is kept after its node's last session ended.
    let retention: Duration
    private(set) var entries: [NodeID: Entry] = [:]
    /// Sessions open per node (a reconnecting agent may open the next before the leader sees the last end).
    private var openSessions: [NodeID: Int] = [:]

    init(retention: Duration = .seconds(300)) {
        self.retention = retention
    }

    mutating func sessionOpened(_ node: NodeID) {
        openSessions[node, default: 0] += 1
        entries[node]?.sessionEndedAt = nil
    }

    mutating func sessionEnded(_ node: NodeID, at now: Duration) {
        let open = max(0, (openSessions[node] ?? 0) - 1)
        openSessions[node] = open == 0 ? nil : open
        if open == 0 { entries[node]?.sessionEndedAt = now }
    }

    mutating func record(_ report: Flotilla_V1_BalancerReport, of node: NodeID, at now: Duration) {
        entries[node] = Entry(report: report, receivedAt: now, sessionEndedAt: openSessions[node] == nil ? now : nil)
    }

    /// Drops the reports whose session ended more than `retention` before `now`.
    mutating func prune(at now: Duration) {
        entries = entries.filter { _, entry in entry.sessionEndedAt.map { now - $0 <= retention } ?? true }
    }

    /// Everything forgotten (this controller is no longer the leader).
    mutating func clear() {
        entries = [:]
        openSessions = [:]
    }
}
