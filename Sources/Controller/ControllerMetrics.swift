import ClusterStore
import CoreMetrics
import Messages

/// The controller's own metrics (Raft's are the driver's): gauges refreshed at each scrape from the store and
/// the dispatcher, and the orchestration loop's placement counter.
struct ControllerMetrics: Sendable {
    let factory: any MetricsFactory
    /// Agents with an open session on this controller (only a leader has any).
    let sessions: Gauge
    /// Tasks placed on a node by the leader's orchestration rounds.
    let placements: Counter

    init(factory: any MetricsFactory) {
        self.factory = factory
        sessions = Gauge(label: "flotilla_sessions", factory: factory)
        placements = Counter(label: "flotilla_scheduler_placements_total", factory: factory)
    }

    /// Every state is set (0 when no task has it), so a state that empties does not keep its last count.
    func refresh(from state: ClusterState, sessions sessionCount: Int) {
        sessions.record(sessionCount)
        var byState: [Flotilla_V1_TaskState: Int] = [:]
        for task in state.tasks { byState[task.state, default: 0] += 1 }
        for taskState in Flotilla_V1_TaskState.allCases {
            Gauge(label: "flotilla_tasks", dimensions: [("state", "\(taskState)")], factory: factory)
                .record(byState[taskState] ?? 0)
        }
        var byStatus: [String: Int] = [:]
        for node in state.nodes { byStatus[node.status.rawValue, default: 0] += 1 }
        for status in NodeRecord.Status.allCases {
            Gauge(label: "flotilla_nodes", dimensions: [("status", status.rawValue)], factory: factory)
                .record(byStatus[status.rawValue] ?? 0)
        }
    }
}
