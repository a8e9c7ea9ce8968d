public import Messages

/// Whatever counts this node's load-balancer traffic: the node's `NodeBalancer` on a real agent. The session asks
/// it for a report every `BalancerReporting.interval` and sends the report to the leader when it changed.
public protocol BalancerStatsSource: Sendable {
    /// Every served service port with its backends' counters (cumulative since each was first served).
    func balancerReport() async -> Flotilla_V1_BalancerReport
}

/// How often, and how much, an agent reports of its load balancer.
public struct BalancerReporting: Sendable {
    /// How often the balancer's numbers are collected and compared with the last report sent (a change goes out
    /// with the next heartbeat, so at the heartbeat period when that is longer).
    public var interval: Duration
    /// The longest an unchanged report waits before it is sent again.
    public var refresh: Duration
    /// The most backend entries (summed over services) one report carries; past it the least busy are left out
    /// and counted in `omitted_backends`. 2,000 entries are about 0.5 MB at most, far under the 4 MiB frame.
    public var maxBackends: Int

    public init(interval: Duration = .seconds(2), refresh: Duration = .seconds(30), maxBackends: Int = 2_000) {
        self.interval = interval
        self.refresh = refresh
        self.maxBackends = maxBackends
    }
}

/// When a session sends the balancer's report: at the first heartbeat, then a collected report only when it
/// differs from the last one sent (its time aside) or `refresh` has passed since. Time comes in as the offset
/// from any fixed origin; one schedule per session (a new leader knows nothing, so a new session sends at once).
public struct BalancerReportSchedule: Sendable {
    public let reporting: BalancerReporting
    private var lastCollected: Duration?
    private var lastSent: (at: Duration, report: Flotilla_V1_BalancerReport)?

    public init(_ reporting: BalancerReporting) {
        self.reporting = reporting
    }

    /// Whether to collect the numbers at `now` (the interval has passed since the last collection); if so, the
    /// collection counts as done.
    public mutating func collectionDue(at now: Duration) -> Bool {
        if let lastCollected, now - lastCollected < reporting.interval { return false }
        lastCollected = now
        return true
    }

    /// The report to send for what was collected at `now`, capped; nil when the leader already has it.
    public mutating func toSend(_ collected: Flotilla_V1_BalancerReport, at now: Duration) -> Flotilla_V1_BalancerReport? {
        let report = Self.capped(collected, maxBackends: reporting.maxBackends)
        if let lastSent, now - lastSent.at < reporting.refresh, Self.sameNumbers(lastSent.report, report) { return nil }
        lastSent = (now, report)
        return report
    }

    /// Equal but for the time it was taken.
    static func sameNumbers(_ a: Flotilla_V1_BalancerReport, _ b: Flotilla_V1_BalancerReport) -> Bool {
        var a = a
        a.takenMs = b.takenMs
        return a == b
    }

    /// `report` with at most `maxBackends` backend entries: the busiest are kept (most requests plus connections,
    /// then most active), the others counted in `omitted_backends`. Services stay listed, even with none left.
    public static func capped(_ report: Flotilla_V1_BalancerReport, maxBackends: Int) -> Flotilla_V1_BalancerReport {
        let total = report.services.reduce(0) { $0 + $1.backends.count }
        guard total > maxBackends else { return report }
        struct Entry { var service: Int; var backend: Int; var busy: UInt64; var active: UInt32 }
        var entries: [Entry] = []
        entries.reserveCapacity(total)
        for (s, service) in report.services.enumerated() {
            for (b, backend) in service.backends.enumerated() {
                entries.append(Entry(service: s, backend: b, busy: backend.requests &+ backend.connections, active: backend.active))
            }
        }
        entries.sort { ($0.busy, $0.active, $1.service, $1.backend) > ($1.busy, $1.active, $0.service, $0.backend) }
        var kept = Array(repeating: Set<Int>(), count: report.services.count)
        for entry in entries.prefix(max(0, maxBackends)) { kept[entry.service].insert(entry.backend) }
        var capped = report
        for index in capped.services.indices {
            capped.services[index].backends = capped.services[index].backends.enumerated()
                .filter { kept[index].contains($0.offset) }.map(\.element)
        }
        capped.omittedBackends = report.omittedBackends + UInt32(total - min(total, max(0, maxBackends)))
        return capped
    }
}
