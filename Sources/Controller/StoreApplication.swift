import ClusterModel
import ClusterStore
import Raft
import RaftRuntime
import Synchronization

/// The `ClusterStore` as Raft's state machine on this controller: applies committed entries, answers local
/// reads, snapshots and restores. Thread-safe: Raft applies while RPC handlers read.
final class StoreApplication: RaftApplication {
    private let state = Mutex(ClusterState())
    /// Every applied change, for the leader's control loops.
    let watch = StoreWatch()

    func apply(index: LogIndex, command: [UInt8]) throws -> [UInt8] {
        // A refusal (a command from a newer version, a malformed entry) is thrown: the driver stops rather
        // than skip an entry the other replicas applied.
        let outcome = try state.withLock { try $0.apply(index: index.rawValue, command: command) }
        watch.publish(.changes(outcome.changes))
        return StoreResultCodec.encode(outcome.result)
    }

    func skip(index: LogIndex) {
        state.withLock { try? $0.skip(index: index.rawValue) }
    }

    func snapshot() -> [UInt8] { state.withLock { $0.snapshot() } }
    /// A copy of the state (copy-on-write: cheap under the lock), encoded later off Raft's path.
    func snapshotEncoder() -> @Sendable () -> [UInt8] {
        let copy = state.withLock { $0 }
        return { copy.snapshot() }
    }

    func restore(_ snapshot: Snapshot) throws {
        let restored = try ClusterState(snapshot: snapshot.data)
        state.withLock { $0 = restored }
        watch.publish(.reset)
    }

    /// Reads the current state (a copy; the tables are small values).
    func read<T>(_ body: (ClusterState) -> T) -> T { state.withLock { body($0) } }
}

/// The result of an applied command, as the proposer gets it back through Raft's result bytes:
/// a tag byte, then a big-endian u64 or a UTF-8 message.
enum StoreResultCodec {
    static func encode(_ result: ApplyResult) -> [UInt8] {
        switch result {
        case .ok(let index): [0] + bytes(index)
        case .casFailed(let current): [1] + bytes(current)
        case .notFound: [2]
        case .invalid(let message): [3] + Array(message.utf8)
        }
    }

    static func decode(_ bytes: [UInt8]) -> ApplyResult? {
        guard let tag = bytes.first else { return nil }
        let rest = bytes.dropFirst()
        func number() -> UInt64 { rest.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }
        switch tag {
        case 0: return .ok(index: number())
        case 1: return .casFailed(currentIndex: number())
        case 2: return .notFound
        case 3: return .invalid(String(decoding: rest, as: UTF8.self))
        default: return nil
        }
    }

    private static func bytes(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian, Array.init)
    }
}
