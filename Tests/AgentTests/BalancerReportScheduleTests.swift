import Agent
import Messages
import Testing

/// When an agent sends its load balancer's report to the leader, and how big it may be.
@Suite("Balancer report schedule")
struct BalancerReportScheduleTests {
    static func report(_ backends: [(service: String, task: String, requests: UInt64)]) -> Flotilla_V1_BalancerReport {
        var report = Flotilla_V1_BalancerReport()
        for entry in backends {
            var backend = Flotilla_V1_BackendBalancerStats()
            backend.taskID = entry.task
            backend.requests = entry.requests
            if let index = report.services.firstIndex(where: { $0.serviceName == entry.service }) {
                report.services[index].backends.append(backend)
            } else {
                var service = Flotilla_V1_ServiceBalancerStats()
                service.serviceName = entry.service
                service.backends = [backend]
                report.services.append(service)
            }
        }
        return report
    }

    @Test("the numbers are collected at once, then once per interval")
    func collectionInterval() {
        var schedule = BalancerReportSchedule(BalancerReporting(interval: .seconds(2)))
        let due = [0, 1_000, 2_000, 3_999, 5_000].map { schedule.collectionDue(at: .milliseconds($0)) }
        #expect(due == [true, false, true, false, true])
    }

    @Test("the first report goes out; an unchanged one only after the refresh period; a changed one at once")
    func sendOnChange() {
        var schedule = BalancerReportSchedule(BalancerReporting(interval: .seconds(2), refresh: .seconds(30)))
        let quiet = Self.report([("web", "t1", 5)])
        var later = quiet
        later.takenMs = 99
        let busier = Self.report([("web", "t1", 6)])
        let first = schedule.toSend(quiet, at: .seconds(0))
        let sameButLater = schedule.toSend(later, at: .seconds(2))
        let unchanged = schedule.toSend(quiet, at: .seconds(28))
        let refreshed = schedule.toSend(quiet, at: .seconds(30))
        let changed = schedule.toSend(busier, at: .seconds(32))
        let again = schedule.toSend(busier, at: .seconds(34))
        #expect(first == quiet, "a new session's leader knows nothing yet")
        #expect(sameButLater == nil, "only the time differs")
        #expect(unchanged == nil)
        #expect(refreshed == quiet, "refreshed after 30 s")
        #expect(changed == busier)
        #expect(again == nil)
    }

    @Test("past the cap the least busy backends are left out and counted; every service stays listed")
    func cap() {
        let report = Self.report([("api", "a1", 1), ("api", "a2", 50), ("web", "w1", 0), ("web", "w2", 7), ("web", "w3", 30)])
        let capped = BalancerReportSchedule.capped(report, maxBackends: 3)
        #expect(capped.services.map(\.serviceName) == ["api", "web"])
        #expect(capped.services[0].backends.map(\.taskID) == ["a2"])
        #expect(capped.services[1].backends.map(\.taskID) == ["w2", "w3"], "kept in their order")
        #expect(capped.omittedBackends == 2)
        #expect(BalancerReportSchedule.capped(report, maxBackends: 5) == report, "at the cap nothing is left out")
    }

    @Test("a capped report is what the schedule sends")
    func scheduleCaps() {
        var schedule = BalancerReportSchedule(BalancerReporting(maxBackends: 1))
        let sent = schedule.toSend(Self.report([("web", "w1", 3), ("web", "w2", 4)]), at: .zero)
        #expect(sent?.services.first?.backends.map(\.taskID) == ["w2"])
        #expect(sent?.omittedBackends == 1)
    }
}
