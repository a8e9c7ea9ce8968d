import ClusterStore
import Foundation
import Logging
import Orchestrator
import RaftRuntime
import Synchronization

/// The leader's orchestration loop: on every store change (and at least every `interval`), runs the pure
/// `Reconciler` on the current state and commits its plan through Raft as one batch; the store refuses a plan
/// that went stale meanwhile (it re-checks versions when it applies), and the next round plans again.
final class OrchestrationLoop: Sendable {
    let raft: ControllerRaft
    let logger: Logger
    let interval: Duration
    private let reconciler: Mutex<Reconciler>

    init(raft: ControllerRaft, interval: Duration = .milliseconds(250), logger: Logger) {
        self.raft = raft
        self.logger = logger
        self.interval = interval
        reconciler = Mutex(Reconciler(seed: UInt64.random(in: 1...UInt64.max)))
    }

    func run() async {
        let watch = raft.store.watch.subscribe()
        await withTaskGroup(of: Void.self) { group in
            // Store changes wake the loop; a tick keeps time-based decisions (monitor periods, delays) moving.
            let wakeups = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
            group.addTask {
                for await _ in watch { wakeups.continuation.yield() }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: self.interval)
                    wakeups.continuation.yield()
                }
                wakeups.continuation.finish()
            }
            for await _ in wakeups.stream {
                if Task.isCancelled { break }
                await round()
            }
            group.cancelAll()
        }
    }

    /// One reconciliation, if this controller leads.
    func round() async {
        guard await raft.driver.status.role == .leader else { return }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        // A copy of the state (copy-on-write: cheap), so planning never holds up Raft's apply.
        let state = raft.store.read { $0 }
        let plan = reconciler.withLock { $0.plan(for: state, nowMs: now) }
        guard !plan.isEmpty else { return }
        do {
            if !plan.writes.isEmpty || !plan.deletes.isEmpty {
                if case .invalid(let why) = try await raft.propose(ClusterCommands.tasksWrite(plan.writes, deleting: plan.deletes)) {
                    logger.debug("plan refused; planning again", metadata: ["reason": "\(why)"])
                    return
                }
            }
            for change in plan.statusUpdates {
                _ = try await raft.propose(ClusterCommands.serviceStatusUpdate(id: change.serviceID, version: change.version, status: change.status))
            }
            for id in plan.rollbacks {
                guard let service = raft.store.read({ $0.service(id) }), service.hasPreviousSpec else { continue }
                _ = try await raft.propose(ClusterCommands.serviceUpdate(
                    id: id, spec: service.previousSpec, expectedVersion: service.version, nowMs: now, rollback: true))
                logger.warning("update failed; rolling back", metadata: ["service": "\(service.spec.name)", "reason": "\(service.updateStatus.message)"])
            }
        } catch {
            logger.debug("orchestration round not committed", metadata: ["error": "\(error)"])
        }
    }
}
