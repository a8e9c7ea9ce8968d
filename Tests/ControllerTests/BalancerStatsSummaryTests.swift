import AdminClient
import ClusterModel
@testable import Controller
import Messages
import Testing

/// `lb stats` rows from the nodes' reports, and the leader's table of reports.
@Suite("Load-balancer statistics: summary rows and the leader's reports")
struct BalancerStatsSummaryTests {
    static let bounds: [UInt64] = [100, 1_000, 10_000]

    static func backend(_ task: String, requests: UInt64, active: UInt32 = 0, weight: UInt32 = 1, ejected: Bool = false,
                        latency: [UInt64] = []) -> Flotilla_V1_BackendBalancerStats {
        var backend = Flotilla_V1_BackendBalancerStats()
        backend.taskID = task
        backend.address = "127.0.0.1:\(task.count)"
        backend.requests = requests
        backend.connections = requests
        backend.active = active
        backend.weight = weight
        backend.ejected = ejected
        backend.bytesIn = requests * 100
        backend.latency.counts = latency
        backend.latency.count = latency.reduce(0, +)
        return backend
    }

    static func node(_ name: String, _ services: [Flotilla_V1_ServiceBalancerStats]) -> Flotilla_V1_NodeBalancerStats {
        var node = Flotilla_V1_NodeBalancerStats()
        node.nodeID = "id-" + name
        node.nodeName = name
        node.reported = true
        node.connected = true
        node.report.services = services
        node.report.latencyBoundsMicros = bounds
        return node
    }

    static func service(_ name: String, port: UInt32 = 80, rejected: UInt64 = 0,
                        _ backends: [Flotilla_V1_BackendBalancerStats]) -> Flotilla_V1_ServiceBalancerStats {
        var service = Flotilla_V1_ServiceBalancerStats()
        service.serviceID = "sid-" + name
        service.serviceName = name
        service.targetPort = port
        service.rejected = rejected
        service.backends = backends
        return service
    }

    @Test("a row per node and backend, sorted by node, then the service's total over every node")
    func rowsAndTotals() {
        let rows = BalancerStatsSummary.rows([
            Self.node("n2", [Self.service("web", rejected: 1, [Self.backend("t1", requests: 4, latency: [0, 4])])]),
            Self.node("n1", [
                Self.service("web", rejected: 2, [
                    Self.backend("t1", requests: 10, active: 2, latency: [5, 5]),
                    Self.backend("t2", requests: 6, weight: 0, latency: [0, 0, 6]),
                ]),
                Self.service("api", [Self.backend("a1", requests: 1, ejected: true)]),
            ]),
        ])
        #expect(rows.map(\.service) == ["api", "api", "web", "web", "web", "web"], "services by name, each closed by its total")
        #expect(rows.map(\.node) == ["n1", "", "n1", "n1", "n2", ""])
        #expect(rows.map(\.state) == ["ejected", "total", "up", "draining", "up", "total"])
        let total = rows[5]
        #expect(total.requests == 20)
        #expect(total.active == 2)
        #expect(total.bytesIn == 2_000)
        #expect(total.rejected == 3, "answered by the balancers themselves, summed over the nodes")
        #expect(total.latencyCounts == [5, 9, 6])
        // 20 latencies: 5 ≤100µs, 9 ≤1ms, 6 ≤10ms. The 10th is in the second bucket, the 20th in the third.
        #expect(total.latencyMicros(0.5) == 1_000)
        #expect(total.latencyMicros(0.99) == 10_000)
        #expect(rows[0].latencyMicros(0.5) == nil, "no latency measured")
    }

    @Test("a latency above the last bound reads as beyond it")
    func beyondLastBound() {
        let rows = BalancerStatsSummary.rows([Self.node("n1", [Self.service("web", [Self.backend("t1", requests: 1, latency: [0, 0, 0, 1])])])])
        #expect(rows[0].latencyMicros(0.5) == UInt64.max)
    }

    @Test("a service with several ports shows each port apart; nodes without a report add no rows")
    func portsAndUnreported() {
        var silent = Flotilla_V1_NodeBalancerStats()
        silent.nodeName = "n3"
        let rows = BalancerStatsSummary.rows([
            Self.node("n1", [
                Self.service("web", port: 80, [Self.backend("t1", requests: 1)]),
                Self.service("web", port: 443, [Self.backend("t1", requests: 2)]),
                Self.service("api", [Self.backend("a1", requests: 3)]),
            ]),
            silent,
        ])
        #expect(rows.map(\.service) == ["api", "api", "web:80", "web:80", "web:443", "web:443"])
        #expect(rows.filter(\.isTotal).map(\.requests) == [3, 1, 2])
    }

    // MARK: - The leader's table

    @Test("a report is held while its session is open, marked when it ends, and dropped after the retention")
    func reportTable() {
        var table = BalancerReportTable(retention: .seconds(300))
        let node = NodeID("n1")
        var report = Flotilla_V1_BalancerReport()
        report.takenMs = 7
        table.sessionOpened(node)
        table.record(report, of: node, at: .seconds(10))
        #expect(table.entries[node]?.connected == true)
        #expect(table.entries[node]?.receivedAt == .seconds(10))

        table.sessionEnded(node, at: .seconds(20))
        #expect(table.entries[node]?.connected == false, "the last numbers stay, marked")
        table.prune(at: .seconds(320))
        #expect(table.entries[node]?.report == report, "kept for the retention")
        table.prune(at: .seconds(321))
        #expect(table.entries[node] == nil, "dropped after it")
    }

    @Test("a session opened before the last one ended keeps the report connected")
    func overlappingSessions() {
        var table = BalancerReportTable()
        let node = NodeID("n1")
        table.sessionOpened(node)
        table.record(Flotilla_V1_BalancerReport(), of: node, at: .seconds(1))
        table.sessionOpened(node)
        table.sessionEnded(node, at: .seconds(2))
        #expect(table.entries[node]?.connected == true)
        table.sessionEnded(node, at: .seconds(3))
        #expect(table.entries[node]?.sessionEndedAt == .seconds(3))
        table.sessionOpened(node)
        #expect(table.entries[node]?.connected == true, "a new session takes it up again")
        table.clear()
        #expect(table.entries.isEmpty)
    }
}
