public import Messages

/// Traffic per service as the nodes' load balancers see it, from the reports agents send about every 2 s: the
/// input of the autoscaler. Soft state on the leader, not in Raft (a new leader rebuilds it from the next reports).
///
/// A report's counters are cumulative since that node's balancer began serving the port, so a rate is a
/// counter's growth between two reports of the same node, over that node's own report times (clocks of
/// different nodes are never compared). Agents send a report only when something changed (at least every 30 s),
/// so a window without a report means no growth: zero requests per second, the last active count standing.
public struct ServiceTraffic: Sendable {
    /// What the balancers saw of one service over the window.
    public struct Load: Sendable, Equatable {
        /// Requests per second (TCP mode: new connections per second), summed over nodes and tasks.
        public var requestsPerSecond: Double
        /// Connections (TCP) or requests (HTTP) in flight at the last reports, summed over nodes.
        public var activeConnections: Int
        /// The same per task (a task's traffic arrives through every node's balancer).
        public var tasks: [String: TaskLoad]
        /// Nodes whose reports mention the service.
        public var nodes: Int
    }

    public struct TaskLoad: Sendable, Equatable {
        public var requestsPerSecond: Double
        public var activeConnections: Int

        public init(requestsPerSecond: Double, activeConnections: Int) {
            self.requestsPerSecond = requestsPerSecond
            self.activeConnections = activeConnections
        }
    }

    struct Key: Hashable {
        var node: String
        var serviceID: String
        var targetPort: UInt32
        var taskID: String
    }

    struct Sample: Equatable {
        /// When the leader received it (its monotonic milliseconds), for the window.
        var receivedMillis: UInt64
        /// When the agent took it (that node's clock), for rates.
        var takenMillis: UInt64
        var count: UInt64
        var active: Int
    }

    /// How far back rates look.
    public let windowMillis: UInt64
    private var samples: [Key: [Sample]] = [:]

    public init(windowMillis: UInt64 = 10_000) {
        self.windowMillis = max(1, windowMillis)
    }

    /// Takes a node's report. Backends the node no longer reports are forgotten for that node (they left its
    /// tables, or were cut by the report's size cap, and then count as no traffic).
    public mutating func record(_ report: Flotilla_V1_BalancerReport, from node: String, receivedMillis now: UInt64) {
        var reported: Set<Key> = []
        for service in report.services {
            for backend in service.backends where !backend.taskID.isEmpty {
                let key = Key(node: node, serviceID: service.serviceID, targetPort: service.targetPort, taskID: backend.taskID)
                reported.insert(key)
                // HTTP mode counts requests; TCP mode counts connections (its requests stay 0).
                let sample = Sample(receivedMillis: now, takenMillis: report.takenMs,
                                    count: max(backend.requests, backend.connections), active: Int(backend.active))
                var history = samples[key] ?? []
                if let last = history.last, sample.count < last.count || sample.takenMillis <= last.takenMillis {
                    history = []  // the node's balancer started over (agent restart), or a report out of order
                }
                history.append(sample)
                samples[key] = Self.trimmed(history, before: SlidingWindow.start(endingAt: now, length: windowMillis))
            }
        }
        for key in samples.keys where key.node == node && !reported.contains(key) { samples[key] = nil }
    }

    /// Forgets a node (its session ended and its report expired).
    public mutating func forget(node: String) {
        for key in samples.keys where key.node == node { samples[key] = nil }
    }

    /// The service's load over the window ending at `now`; nil when no node reports it.
    public func load(ofService id: String, nowMillis now: UInt64) -> Load? {
        let start = SlidingWindow.start(endingAt: now, length: windowMillis)
        var load = Load(requestsPerSecond: 0, activeConnections: 0, tasks: [:], nodes: 0)
        var nodes: Set<String> = []
        for (key, history) in samples where key.serviceID == id {
            guard let last = history.last else { continue }
            nodes.insert(key.node)
            let kept = Self.trimmed(history, before: start)
            var rate = 0.0
            // No report inside the window: nothing grew.
            if last.receivedMillis >= start, let first = kept.first, last.takenMillis > first.takenMillis {
                rate = Double(last.count - first.count) * 1_000 / Double(last.takenMillis - first.takenMillis)
            }
            load.requestsPerSecond += rate
            load.activeConnections += last.active
            load.tasks[key.taskID, default: TaskLoad(requestsPerSecond: 0, activeConnections: 0)].requestsPerSecond += rate
            load.tasks[key.taskID, default: TaskLoad(requestsPerSecond: 0, activeConnections: 0)].activeConnections += last.active
        }
        guard !nodes.isEmpty else { return nil }
        load.nodes = nodes.count
        return load
    }

    /// The samples inside the window plus the last one before it (the baseline the window's growth starts from).
    static func trimmed(_ history: [Sample], before start: UInt64) -> [Sample] {
        SlidingWindow.trimmed(history, before: start, receivedMillis: \.receivedMillis)
    }
}
