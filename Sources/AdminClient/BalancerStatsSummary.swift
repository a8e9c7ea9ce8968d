public import Wire

/// One line of `flotilla lb stats`: a backend as one node's load balancer saw it, or a service's total over every
/// node and backend shown.
public struct BalancerStatsRow: Sendable, Equatable {
    /// The node's name; empty on a total.
    public var node = ""
    public var nodeID = ""
    /// The service's name, with ":PORT" (its target port) when it has several ports.
    public var service = ""
    public var serviceID = ""
    public var targetPort: UInt32 = 0
    /// The task and where it is reached; empty on a total.
    public var taskID = ""
    public var address = ""
    /// "up", "ejected" or "draining" (weight 0: it gets no new connections); "total" on a total.
    public var state = ""
    public var active: UInt64 = 0
    public var connections: UInt64 = 0
    public var requests: UInt64 = 0
    public var errors: UInt64 = 0
    public var retries: UInt64 = 0
    public var ejections: UInt64 = 0
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Clients the balancers answered themselves (no backend could take them): on totals only.
    public var rejected: UInt64 = 0
    /// Latency buckets (see `latencyBoundsMicros`), their sum and count.
    public var latencyCounts: [UInt64] = []
    public var latencySumMicros: UInt64 = 0
    public var latencyCount: UInt64 = 0
    /// The upper bounds of the buckets, microseconds.
    public var latencyBoundsMicros: [UInt64] = []

    public var isTotal: Bool { state == "total" }

    /// The bucket bound under which `fraction` of the latencies fall (e.g. 0.99): nil with none, `UInt64.max` when
    /// it is above the last bound.
    public func latencyMicros(_ fraction: Double) -> UInt64? {
        guard latencyCount > 0 else { return nil }
        let wanted = UInt64((Double(latencyCount) * fraction).rounded(.up))
        var seen: UInt64 = 0
        for (index, bucket) in latencyCounts.enumerated() {
            seen += bucket
            if seen >= wanted { return index < latencyBoundsMicros.count ? latencyBoundsMicros[index] : UInt64.max }
        }
        return UInt64.max
    }

    mutating func add(_ other: BalancerStatsRow) {
        active += other.active
        connections += other.connections
        requests += other.requests
        errors += other.errors
        retries += other.retries
        ejections += other.ejections
        bytesIn += other.bytesIn
        bytesOut += other.bytesOut
        rejected += other.rejected
        if latencyCounts.count < other.latencyCounts.count {
            latencyCounts += Array(repeating: 0, count: other.latencyCounts.count - latencyCounts.count)
        }
        for (index, count) in other.latencyCounts.enumerated() { latencyCounts[index] += count }
        latencySumMicros &+= other.latencySumMicros
        latencyCount += other.latencyCount
        if latencyBoundsMicros.count < other.latencyBoundsMicros.count { latencyBoundsMicros = other.latencyBoundsMicros }
    }
}

/// The nodes' load-balancer reports as `flotilla lb stats` shows them: per service (by name, then port), a row
/// per node and backend (by node name, then task id), then the service's total over them.
public enum BalancerStatsSummary {
    public static func rows(_ nodes: [Flotilla_V1_NodeBalancerStats]) -> [BalancerStatsRow] {
        struct ServiceKey: Hashable, Comparable {
            var name: String
            var id: String
            var port: UInt32
            static func < (a: Self, b: Self) -> Bool { (a.name, a.id, a.port) < (b.name, b.id, b.port) }
        }
        var groups: [ServiceKey: [BalancerStatsRow]] = [:]
        var rejected: [ServiceKey: UInt64] = [:]
        var ports: [String: Set<UInt32>] = [:]
        for node in nodes where node.reported {
            for service in node.report.services {
                let key = ServiceKey(name: service.serviceName, id: service.serviceID, port: service.targetPort)
                ports[service.serviceID, default: []].insert(service.targetPort)
                rejected[key, default: 0] += service.rejected
                groups[key, default: []] += service.backends.map { backend in
                    var row = BalancerStatsRow()
                    row.node = node.nodeName
                    row.nodeID = node.nodeID
                    row.serviceID = service.serviceID
                    row.targetPort = service.targetPort
                    row.taskID = backend.taskID
                    row.address = backend.address
                    row.state = backend.ejected ? "ejected" : backend.weight == 0 ? "draining" : "up"
                    row.active = UInt64(backend.active)
                    row.connections = backend.connections
                    row.requests = backend.requests
                    row.errors = backend.errors
                    row.retries = backend.retries
                    row.ejections = UInt64(backend.ejections)
                    row.bytesIn = backend.bytesIn
                    row.bytesOut = backend.bytesOut
                    row.latencyCounts = backend.latency.counts
                    row.latencySumMicros = backend.latency.sumMicros
                    row.latencyCount = backend.latency.count
                    row.latencyBoundsMicros = node.report.latencyBoundsMicros
                    return row
                }
            }
        }
        var rows: [BalancerStatsRow] = []
        for key in groups.keys.sorted() {
            let name = (ports[key.id]?.count ?? 0) > 1 ? "\(key.name):\(key.port)" : key.name
            var total = BalancerStatsRow()
            total.service = name
            total.serviceID = key.id
            total.targetPort = key.port
            total.state = "total"
            total.rejected = rejected[key] ?? 0
            for var row in groups[key]!.sorted(by: { ($0.node, $0.nodeID, $0.taskID) < ($1.node, $1.nodeID, $1.taskID) }) {
                row.service = name
                total.add(row)
                rows.append(row)
            }
            rows.append(total)
        }
        return rows
    }
}
