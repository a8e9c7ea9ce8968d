import Messages
import Orchestrator
import Testing

/// The leader's view of each service's traffic, from the balancer reports of the nodes.
@Suite struct ServiceTrafficTests {
    /// A report of one service with `counts` (task → cumulative requests) and `active` in flight per task.
    static func report(takenMs: UInt64, service: String = "web", port: UInt32 = 8080, mode: String = "http",
                       _ counts: [String: UInt64], active: UInt32 = 0) -> Flotilla_V1_BalancerReport {
        var stats = Flotilla_V1_ServiceBalancerStats()
        stats.serviceID = service
        stats.targetPort = port
        stats.mode = mode
        stats.backends = counts.sorted { $0.key < $1.key }.map { task, count in
            var backend = Flotilla_V1_BackendBalancerStats()
            backend.taskID = task
            if mode == "http" { backend.requests = count; backend.connections = min(count, 4) } else { backend.connections = count }
            backend.active = active
            return backend
        }
        var report = Flotilla_V1_BalancerReport()
        report.takenMs = takenMs
        report.services = [stats]
        return report
    }

    @Test func requestsPerSecondSumOverNodesAndTasks() {
        var traffic = ServiceTraffic(windowMillis: 10_000)
        // Two nodes, each sending 50 requests/s to each of two tasks, reporting every 2 s; their clocks differ.
        for step in 0...10 {
            let now = UInt64(step) * 2_000
            let count = UInt64(step) * 100
            traffic.record(Self.report(takenMs: 1_700_000_000_000 + now, ["t1": count, "t2": count], active: 3), from: "n1", receivedMillis: now)
            traffic.record(Self.report(takenMs: 5_000 + now, ["t1": count, "t2": count], active: 1), from: "n2", receivedMillis: now + 7)
        }
        let load = traffic.load(ofService: "web", nowMillis: 20_010)
        #expect(load?.nodes == 2)
        #expect(load.map { abs($0.requestsPerSecond - 200) < 0.001 } == true, "4 × 50 requests/s: \(String(describing: load))")
        #expect(load?.activeConnections == 8)
        #expect(load?.tasks["t1"] == ServiceTraffic.TaskLoad(requestsPerSecond: 100, activeConnections: 4))
        #expect(traffic.load(ofService: "other", nowMillis: 20_010) == nil)
    }

    @Test func theWindowFollowsAChangeOfRate() {
        var traffic = ServiceTraffic(windowMillis: 10_000)
        var count: UInt64 = 0
        for step in 0...30 {
            count += step < 15 ? 20 : 200  // 10 requests/s, then 100 from 30 s on
            traffic.record(Self.report(takenMs: UInt64(step) * 2_000, ["t1": count]), from: "n1", receivedMillis: UInt64(step) * 2_000)
            if step == 14 { #expect(traffic.load(ofService: "web", nowMillis: 28_000)?.requestsPerSecond == 10) }
        }
        #expect(traffic.load(ofService: "web", nowMillis: 60_000)?.requestsPerSecond == 100)
    }

    @Test func tcpServicesCountNewConnections() {
        var traffic = ServiceTraffic()
        traffic.record(Self.report(takenMs: 0, mode: "tcp", ["t1": 0]), from: "n1", receivedMillis: 0)
        traffic.record(Self.report(takenMs: 2_000, mode: "tcp", ["t1": 60]), from: "n1", receivedMillis: 2_000)
        #expect(traffic.load(ofService: "web", nowMillis: 2_000)?.requestsPerSecond == 30)
    }

    @Test func noReportInTheWindowMeansNoGrowthWhileTheActiveCountStands() {
        var traffic = ServiceTraffic(windowMillis: 10_000)
        traffic.record(Self.report(takenMs: 0, ["t1": 0], active: 2), from: "n1", receivedMillis: 0)
        traffic.record(Self.report(takenMs: 2_000, ["t1": 400], active: 2), from: "n1", receivedMillis: 2_000)
        // Agents send only what changed (at least every 30 s): 25 s of silence is 25 s without a request.
        let quiet = traffic.load(ofService: "web", nowMillis: 27_000)
        #expect(quiet?.requestsPerSecond == 0)
        #expect(quiet?.activeConnections == 2)
    }

    @Test func aBalancerThatStartedOverIsNotANegativeRate() {
        var traffic = ServiceTraffic()
        traffic.record(Self.report(takenMs: 0, ["t1": 1_000]), from: "n1", receivedMillis: 0)
        traffic.record(Self.report(takenMs: 2_000, ["t1": 1_200]), from: "n1", receivedMillis: 2_000)
        // The agent restarted: its counters begin again.
        traffic.record(Self.report(takenMs: 4_000, ["t1": 10]), from: "n1", receivedMillis: 4_000)
        #expect(traffic.load(ofService: "web", nowMillis: 4_000)?.requestsPerSecond == 0)
        traffic.record(Self.report(takenMs: 6_000, ["t1": 110]), from: "n1", receivedMillis: 6_000)
        #expect(traffic.load(ofService: "web", nowMillis: 6_000)?.requestsPerSecond == 50)
    }

    @Test func aBackendANodeNoLongerReportsAndAForgottenNodeLeaveTheSums() {
        var traffic = ServiceTraffic()
        traffic.record(Self.report(takenMs: 0, ["t1": 0, "t2": 0]), from: "n1", receivedMillis: 0)
        traffic.record(Self.report(takenMs: 0, ["t1": 0]), from: "n2", receivedMillis: 0)
        traffic.record(Self.report(takenMs: 2_000, ["t1": 20, "t2": 20]), from: "n1", receivedMillis: 2_000)
        traffic.record(Self.report(takenMs: 2_000, ["t1": 20]), from: "n2", receivedMillis: 2_000)
        #expect(traffic.load(ofService: "web", nowMillis: 2_000)?.requestsPerSecond == 30)
        // t2 left n1's table.
        traffic.record(Self.report(takenMs: 4_000, ["t1": 40]), from: "n1", receivedMillis: 4_000)
        #expect(traffic.load(ofService: "web", nowMillis: 4_000)?.tasks["t2"] == nil)
        traffic.forget(node: "n2")
        let load = traffic.load(ofService: "web", nowMillis: 4_000)
        #expect(load?.nodes == 1)
        #expect(load?.requestsPerSecond == 10)
    }

    @Test func everyPortOfAServiceCounts() {
        var traffic = ServiceTraffic()
        var first = Self.report(takenMs: 0, port: 80, ["t1": 0])
        first.services += Self.report(takenMs: 0, port: 443, ["t1": 0]).services
        var second = Self.report(takenMs: 1_000, port: 80, ["t1": 10])
        second.services += Self.report(takenMs: 1_000, port: 443, ["t1": 30]).services
        traffic.record(first, from: "n1", receivedMillis: 0)
        traffic.record(second, from: "n1", receivedMillis: 1_000)
        #expect(traffic.load(ofService: "web", nowMillis: 1_000)?.requestsPerSecond == 40)
    }
}
