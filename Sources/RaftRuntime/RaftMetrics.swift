import CoreMetrics
import Raft

/// A member's metrics, made by the factory the driver is given (the process's Prometheus registry; a test's
/// own; by default none). Gauges follow every Ready the driver processes; the timers are recorded on the
/// disk thread around each write-ahead-log append and each fsync.
struct RaftMetrics: Sendable {
    let term: Gauge
    let isLeader: Gauge
    let commitIndex: Gauge
    let appliedIndex: Gauge
    let lastIndex: Gauge
    /// A Ready's entries and hard state written and fsynced.
    let append: CoreMetrics.Timer
    /// One fsync (fdatasync) of the log.
    let fsync: CoreMetrics.Timer

    init(factory: any MetricsFactory) {
        term = Gauge(label: "flotilla_raft_term", factory: factory)
        isLeader = Gauge(label: "flotilla_raft_is_leader", factory: factory)
        commitIndex = Gauge(label: "flotilla_raft_commit_index", factory: factory)
        appliedIndex = Gauge(label: "flotilla_raft_applied_index", factory: factory)
        lastIndex = Gauge(label: "flotilla_raft_last_index", factory: factory)
        append = CoreMetrics.Timer(label: "flotilla_raft_wal_append_seconds", factory: factory)
        fsync = CoreMetrics.Timer(label: "flotilla_raft_wal_fsync_seconds", factory: factory)
    }

    func update(term: Term, role: RaftRole, commitIndex: LogIndex, appliedIndex: LogIndex, lastIndex: LogIndex) {
        self.term.record(term.rawValue)
        isLeader.record(role == .leader ? 1 : 0)
        self.commitIndex.record(commitIndex.rawValue)
        self.appliedIndex.record(appliedIndex.rawValue)
        self.lastIndex.record(lastIndex.rawValue)
    }
}

extension CoreMetrics.Timer {
    /// Runs `body` and records how long it took (also when it throws).
    func time<T>(_ body: () throws -> T) rethrows -> T {
        let clock = ContinuousClock()
        let start = clock.now
        defer {
            let elapsed = (clock.now - start).components
            recordNanoseconds(elapsed.seconds * 1_000_000_000 + elapsed.attoseconds / 1_000_000_000)
        }
        return try body()
    }
}
