import ClusterModel
import Messages
import Orchestrator
import Synchronization

/// The leader's soft state for the autoscaler: every node's load-balancer reports (traffic per service) and task
/// usage reports (CPU and memory per task), over a sliding window. Not in Raft: cleared when leadership is lost,
/// and a new leader rebuilds it from the agents' next reports. The math is `ServiceTraffic`'s and
/// `TaskUsageTracker`'s; this shell feeds them with its own monotonic clock.
final class AutoscaleMonitor: Sendable {
    private struct Reports {
        var traffic: ServiceTraffic
        var usage: TaskUsageTracker
        /// Service id → the node whose balancer last said it holds a connection for it, and when.
        var wakes: [String: (node: String, atMillis: UInt64)] = [:]
    }

    /// A wake counts this long after the heartbeat that carried it (agents repeat it on every heartbeat while
    /// connections wait).
    static let wakeLifetimeMillis: UInt64 = 3_000

    /// How far back rates look, ms.
    let windowMillis: UInt64
    private let reports: Mutex<Reports>
    private let origin = ContinuousClock.now

    init(window: Duration) {
        windowMillis = UInt64(max(1, window / .milliseconds(1)))
        reports = Mutex(Reports(traffic: ServiceTraffic(windowMillis: windowMillis), usage: TaskUsageTracker(windowMillis: windowMillis)))
    }

    /// Milliseconds since this monitor was made (monotonic): the time of its windows and of the autoscaler.
    var nowMillis: UInt64 { UInt64(max(0, (ContinuousClock.now - origin) / .milliseconds(1))) }

    func record(balancerReport report: Flotilla_V1_BalancerReport, of node: NodeID) {
        let now = nowMillis
        reports.withLock { $0.traffic.record(report, from: node.rawValue, receivedMillis: now) }
    }

    func record(taskUsage usage: [Flotilla_V1_TaskUsage], of node: NodeID) {
        let now = nowMillis
        reports.withLock { $0.usage.record(usage, from: node.rawValue, receivedMillis: now) }
    }

    /// `node`'s balancer holds connections for `services`.
    func record(wakes services: [String], from node: String) {
        let now = nowMillis
        reports.withLock { reports in
            for service in services.prefix(1_000) { reports.wakes[service] = (node, now) }
        }
    }

    /// The node (name) whose balancer holds a connection for service `id`, if one said so lately.
    func waking(_ id: String, at now: UInt64) -> String? {
        reports.withLock { reports in
            guard let wake = reports.wakes[id] else { return nil }
            guard now - min(now, wake.atMillis) <= Self.wakeLifetimeMillis else {
                reports.wakes[id] = nil
                return nil
            }
            return wake.node
        }
    }

    /// A node's session ended: what it reported no longer counts.
    func forget(node: NodeID) {
        reports.withLock {
            $0.traffic.forget(node: node.rawValue)
            $0.usage.forget(node: node.rawValue)
        }
    }

    /// Leadership lost: everything goes.
    func clear() {
        reports.withLock {
            $0.traffic = ServiceTraffic(windowMillis: windowMillis)
            $0.usage = TaskUsageTracker(windowMillis: windowMillis)
            $0.wakes = [:]
        }
    }

    /// `service` measured now; `tasks` are its tasks in the store.
    func measure(_ service: Flotilla_V1_ServiceRecord, tasks: [Flotilla_V1_TaskRecord], at now: UInt64) -> AutoscaleMeasurement {
        reports.withLock { AutoscaleMeasurement(service: service, tasks: tasks, traffic: $0.traffic, usage: $0.usage, nowMillis: now) }
    }
}
