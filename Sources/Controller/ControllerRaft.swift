import ClusterModel
import ClusterStore
import Foundation
import Logging
import Raft
import RaftRuntime
import Transport
import Wire

/// The controller's replicated core: the Raft member, the store it applies into, and the translation of
/// Raft's answers into protocol errors (NOT_LEADER with the leader's address).
struct ControllerRaft: Sendable {
    let id: NodeID
    let driver: RaftDriver
    let store: StoreApplication

    /// The address of a controller, from the replicated table.
    func address(of node: NodeID?) -> String? {
        guard let node else { return nil }
        return store.read { $0.controller(node)?.address }
    }

    func translate(_ error: any Error) -> any Error {
        switch error {
        case RaftDriverError.notLeader(let leader):
            let address = address(of: leader)
            return RPCError(
                .notLeader,
                leader.map { "this controller is not the leader; the leader is \($0)" } ?? "no leader is elected right now; retry shortly",
                leaderAddress: address)
        case RaftDriverError.dropped:
            return RPCError(.aborted, "the write did not commit (leadership changed first); it did not happen, retry it")
        case RaftDriverError.stopped:
            return RPCError(.unavailable, "this controller's Raft member has stopped")
        case RaftDriverError.rejected(let why):
            return RPCError(.failedPrecondition, why)
        case let error as StoreError:
            return RPCError(.invalidArgument, error.message)
        default:
            return error
        }
    }

    /// Proposes a store command, stamped with this controller's clock (the time of the events it gives rise
    /// to), and returns the applied result.
    func propose(_ command: [UInt8]) async throws -> ApplyResult {
        do {
            let now = UInt64(Date().timeIntervalSince1970 * 1000)
            let bytes = try await driver.propose(ClusterCommands.stamped(command, proposedAtMs: now))
            guard let result = StoreResultCodec.decode(bytes) else {
                throw RPCError(.internalError, "the store returned an unreadable result")
            }
            return result
        } catch {
            throw translate(error)
        }
    }

    /// Waits until a read here would see every write acknowledged before it (leader only).
    func linearizable() async throws {
        do {
            try await driver.linearizableRead()
        } catch {
            throw translate(error)
        }
    }
}
