import ClusterStore
import CoreMetrics
import Foundation
import Logging
import Messages
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
    /// Counts tasks given a node by committed plans.
    private let placements: Counter?
    /// Whether most nodes fell silent at once (the node monitor's judgement).
    private let disrupted: @Sendable () -> Bool

    init(
        raft: ControllerRaft, interval: Duration = .milliseconds(250), placements: Counter? = nil,
        disrupted: @escaping @Sendable () -> Bool = { false }, logger: Logger
    ) {
        self.raft = raft
        self.disrupted = disrupted
        self.placements = placements
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

    /// Tasks per `TasksWrite`: a few hundred kilobytes, well under a message's 4 MiB.
    static let batchSize = 1_000

    /// The plan's writes and deletes cut into commands of at most `batchSize` rows each.
    static func batches(writes: [Flotilla_V1_TaskRecord], deletes: [String]) -> [(writes: [Flotilla_V1_TaskRecord], deletes: [String])] {
        var batches: [(writes: [Flotilla_V1_TaskRecord], deletes: [String])] = []
        for start in stride(from: 0, to: writes.count, by: batchSize) {
            batches.append((Array(writes[start..<min(start + batchSize, writes.count)]), []))
        }
        for start in stride(from: 0, to: deletes.count, by: batchSize) {
            batches.append(([], Array(deletes[start..<min(start + batchSize, deletes.count)])))
        }
        return batches
    }

    /// One reconciliation, if this controller leads.
    func round() async {
        guard await raft.driver.status.role == .leader else { return }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        // A copy of the state (copy-on-write: cheap), so planning never holds up Raft's apply.
        let state = raft.store.read { $0 }
        let disrupted = disrupted()
        let plan = reconciler.withLock { $0.plan(for: state, nowMs: now, disrupted: disrupted) }
        guard !plan.isEmpty else { return }
        do {
            if !plan.writes.isEmpty || !plan.deletes.isEmpty {
                // Batches of bounded size (a Raft entry must fit in one message), proposed together so Raft
                // commits them in as few rounds as it can. A batch refused as stale is planned again next round.
                let refusals = try await withThrowingTaskGroup(of: String?.self) { group in
                    for batch in Self.batches(writes: plan.writes, deletes: plan.deletes) {
                        group.addTask {
                            if case .invalid(let why) = try await self.raft.propose(ClusterCommands.tasksWrite(batch.writes, deleting: batch.deletes)) {
                                return why
                            }
                            return nil
                        }
                    }
                    return try await group.reduce(into: [String]()) { if let why = $1 { $0.append(why) } }
                }
                if let why = refusals.first {
                    logger.debug("plan refused; planning again", metadata: ["reason": "\(why)", "batches.refused": "\(refusals.count)"])
                    return
                }
                // A write that gives a task a node it did not have is a placement.
                let placed = plan.writes.filter { !$0.nodeID.isEmpty && (state.task($0.id)?.nodeID ?? "").isEmpty }.count
                if placed > 0 { placements?.increment(by: placed) }
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
