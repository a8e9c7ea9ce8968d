import Dispatch
import Foundation
import Raft

/// Does a member's disk writes on one dedicated serial queue, off the Swift concurrency pool: an fsync holds
/// its thread for milliseconds, and the pool has only as many threads as there are cores. While a write is
/// in flight the driver's actor stays free to take messages and proposals, which the next write batches.
///
/// `@unchecked Sendable`: the log is touched only from `queue`, one job at a time; the snapshot store from
/// either queue, under `snapshotLock`.
final class DiskWriter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "flotilla.raft.disk", qos: .userInitiated)
    /// Snapshots this member takes are written here, beside the log's queue.
    private let snapshotQueue = DispatchQueue(label: "flotilla.raft.snapshot", qos: .utility)
    /// The snapshot store is written from both queues (a leader's snapshot arrives with the log's writes).
    private let snapshotLock = NSLock()
    private let wal: WriteAheadLog
    private let snapshots: SnapshotStore
    private let metrics: RaftMetrics

    init(wal: WriteAheadLog, snapshots: SnapshotStore, metrics: RaftMetrics) {
        self.wal = wal
        self.snapshots = snapshots
        self.metrics = metrics
        wal.fsyncTimer = metrics.fsync
    }

    /// Makes a Ready's snapshot, entries and hard state durable, in that order.
    func persist(snapshot: Snapshot?, entries: [LogEntry], hardState: HardState?) async throws {
        try await run {
            if let snapshot {
                try self.snapshotLock.withLock { try self.snapshots.save(snapshot) }
                try self.wal.snapshotSaved(snapshot.metadata)
            }
            if !entries.isEmpty || hardState != nil {
                try self.metrics.append.time { try self.wal.append(entries: entries, hardState: hardState) }
            }
        }
    }

    /// Saves a snapshot this member took, then lets the log drop the segments it covers. The file is written on
    /// its own queue, so the log's appends go on meanwhile; only the log's note of it waits its turn.
    func saveSnapshot(_ snapshot: Snapshot) async throws {
        try await run(on: snapshotQueue) { try self.snapshotLock.withLock { try self.snapshots.save(snapshot) } }
        try await run { try self.wal.snapshotSaved(snapshot.metadata) }
    }

    private func run(on target: DispatchQueue? = nil, _ work: @escaping @Sendable () throws -> Void) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            (target ?? queue).async {
                do {
                    try work()
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }
}
