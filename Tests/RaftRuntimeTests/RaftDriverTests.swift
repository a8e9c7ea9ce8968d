import ClusterModel
import Foundation
import Raft
@testable import RaftRuntime
import Synchronization
import TestSupport
import Testing

/// An application that records the commands it applies, in order (with snapshot support).
final class RecordingApplication: RaftApplication {
    private let state = Mutex<(applied: [String], index: LogIndex)>(([], 0))

    func apply(index: LogIndex, command: [UInt8]) throws -> [UInt8] {
        state.withLock {
            $0.applied.append(String(decoding: command, as: UTF8.self))
            $0.index = index
        }
        return Array("ok \(index)".utf8)
    }

    func skip(index: LogIndex) { state.withLock { $0.index = index } }

    func snapshot() -> [UInt8] { Array(state.withLock { $0.applied.joined(separator: "\n") }.utf8) }

    func restore(_ snapshot: Snapshot) throws {
        let text = String(decoding: snapshot.data, as: UTF8.self)
        state.withLock {
            $0.applied = text.isEmpty ? [] : text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            $0.index = snapshot.metadata.index
        }
    }

    var applied: [String] { state.withLock { $0.applied } }
}

/// Routes Raft messages between in-process drivers; links can be cut.
final class InMemoryRaftNetwork: Sendable {
    private let inboxes = Mutex<[NodeID: AsyncStream<RaftMessage>.Continuation]>([:])
    private let down = Mutex<Set<NodeID>>([])

    func inbox(for id: NodeID) -> AsyncStream<RaftMessage> {
        let (stream, continuation) = AsyncStream.makeStream(of: RaftMessage.self)
        inboxes.withLock { $0[id] = continuation }
        return stream
    }

    func setDown(_ id: NodeID, _ isDown: Bool) {
        down.withLock { if isDown { $0.insert(id) } else { $0.remove(id) } }
        if isDown { inboxes.withLock { $0.removeValue(forKey: id)?.finish() } }
    }

    func transport(for id: NodeID) -> some RaftTransport { Port(network: self, from: id) }

    struct Port: RaftTransport {
        let network: InMemoryRaftNetwork
        let from: NodeID
        func send(_ messages: [RaftMessage]) {
            let down = network.down.withLock { $0 }
            guard !down.contains(from) else { return }
            let inboxes = network.inboxes.withLock { $0 }
            for message in messages where !down.contains(message.to) {
                inboxes[message.to]?.yield(message)
            }
        }
    }
}

@Suite("Raft driver: storage, ticks, transport", .serialized)
struct RaftDriverTests {
    static let ids = (1...3).map { NodeID("n\($0)") }

    static func configuration(snapshotThreshold: UInt64 = 10_000) -> RaftDriverConfiguration {
        var configuration = RaftDriverConfiguration()
        configuration.tickInterval = .milliseconds(20)
        configuration.snapshotThreshold = snapshotThreshold
        configuration.retainedEntries = 5
        return configuration
    }

    /// A member: its driver, its application, and the task running it (cancel = kill).
    struct Member: Sendable {
        let driver: RaftDriver
        let application: RecordingApplication
    }

    static func bootstrapLog(_ directory: String) throws {
        // All three start from the same log naming every voter (as `--init` then joins would produce).
        let (wal, _) = try WriteAheadLog.open(directory: directory + "/wal")
        let entries = ids.enumerated().map { LogEntry(term: 1, index: LogIndex(UInt64($0.offset + 1)), payload: .configuration(.promote($0.element))) }
        try wal.append(entries: entries, hardState: HardState(term: 1, votedFor: nil, commit: 3))
    }

    static func start(_ id: NodeID, root: String, network: InMemoryRaftNetwork, snapshotThreshold: UInt64, group: inout ThrowingTaskGroup<Void, any Error>) throws -> Member {
        let application = RecordingApplication()
        network.setDown(id, false)
        let driver = try RaftDriver(
            id: id, directory: root + "/" + id.rawValue, bootstrap: false, application: application,
            transport: network.transport(for: id), configuration: configuration(snapshotThreshold: snapshotThreshold),
            seed: UInt64(id.rawValue.utf8.last!))
        let inbox = network.inbox(for: id)
        group.addTask { try await driver.run() }
        group.addTask { for await message in inbox { await driver.receive(message) } }
        return Member(driver: driver, application: application)
    }

    static func leader(of members: [NodeID: Member]) async -> NodeID? {
        for (id, member) in members where await member.driver.status.role == .leader { return id }
        return nil
    }

    @Test("three members elect a leader, commit writes, survive the leader's loss and a restart from disk")
    func replicateKillRestart() async throws {
        for threshold in [UInt64(10_000), 20] {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-raft-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: root) }
            for id in Self.ids { try Self.bootstrapLog(root + "/" + id.rawValue) }
            let network = InMemoryRaftNetwork()
            try await withThrowingTaskGroup(of: Void.self) { group in
                var members: [NodeID: Member] = [:]
                for id in Self.ids { members[id] = try Self.start(id, root: root, network: network, snapshotThreshold: threshold, group: &group) }
                let initial = members
                #expect(try await eventually(timeout: .seconds(30)) { await Self.leader(of: initial) != nil })
                let first = try #require(await Self.leader(of: initial))
                for i in 0..<50 {
                    let result = try await members[first]!.driver.propose(Array("w\(i)".utf8))
                    #expect(String(decoding: result, as: UTF8.self).hasPrefix("ok "))
                }
                try await members[first]!.driver.linearizableRead()
                #expect(members[first]!.application.applied == (0..<50).map { "w\($0)" })

                // The leader dies: the others elect a new one and keep accepting writes.
                network.setDown(first, true)
                let survivors = members.filter { $0.key != first }
                let elected = try await eventually(timeout: .seconds(30)) { await Self.leader(of: survivors) != nil }
                if !elected {
                    for (id, member) in survivors { print("DEBUG \(id) \(await member.driver.status)") }
                }
                try #require(elected)
                let second = try #require(await Self.leader(of: members.filter { $0.key != first }))
                for i in 50..<80 { _ = try await members[second]!.driver.propose(Array("w\(i)".utf8)) }

                // The old leader restarts from its data directory and catches up.
                members[first] = try Self.start(first, root: root, network: network, snapshotThreshold: threshold, group: &group)
                let expected = (0..<80).map { "w\($0)" }
                let everyone = Array(members.values)
                let caughtUp = try await eventually(timeout: .seconds(20)) {
                    everyone.allSatisfy { $0.application.applied == expected }
                }
                #expect(caughtUp, "applied: \(everyone.map { $0.application.applied.count })")
                group.cancelAll()
            }
        }
    }

    /// Three members on an in-memory network, once they have elected a leader: `body` gets them, the network
    /// and the leader's id; the members stop when it returns.
    static func withElectedTrio(_ body: ([NodeID: Member], InMemoryRaftNetwork, NodeID) async throws -> Void) async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-raft-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for id in ids { try bootstrapLog(root + "/" + id.rawValue) }
        let network = InMemoryRaftNetwork()
        try await withThrowingTaskGroup(of: Void.self) { group in
            var members: [NodeID: Member] = [:]
            for id in ids { members[id] = try start(id, root: root, network: network, snapshotThreshold: 10_000, group: &group) }
            let current = members
            #expect(try await eventually(timeout: .seconds(30)) { await Self.leader(of: current) != nil })
            let elected = try #require(await Self.leader(of: members))
            try await body(members, network, elected)
            group.cancelAll()
        }
    }

    @Test("a read on a leader that loses its quorum fails with NOT_LEADER once it steps down, instead of waiting for ever")
    func deposedLeaderFailsReads() async throws {
        try await Self.withElectedTrio { members, network, leader in
            try await members[leader]!.driver.linearizableRead()  // one that can be confirmed
            network.setDown(leader, true)
            // Cut off, it cannot confirm this read; check-quorum makes it step down, which must end the read.
            let outcome = Mutex<String?>(nil)
            let driver = members[leader]!.driver
            let read = Task {
                do {
                    try await driver.linearizableRead()
                    outcome.withLock { $0 = "confirmed without a quorum" }
                } catch let error as RaftDriverError {
                    if case .notLeader = error { outcome.withLock { $0 = "not leader" } } else { outcome.withLock { $0 = "\(error)" } }
                } catch {
                    outcome.withLock { $0 = "\(error)" }
                }
            }
            // A read that never ends is left behind (it cannot be cancelled), so the test ends either way.
            #expect(try await eventually(timeout: .seconds(60)) { outcome.withLock { $0 } != nil }, "the read is still waiting")
            _ = read
            let result = outcome.withLock { $0 }
            #expect(result == "not leader")
        }
    }

    @Test("a follower refuses proposals and reads, naming the leader")
    func followerRefuses() async throws {
        try await Self.withElectedTrio { members, _, leader in
            let follower = try #require(Self.ids.first { $0 != leader })
            let followerDriver = members[follower]!.driver
            #expect(try await eventually { await followerDriver.status.leader == leader })
            await #expect(throws: RaftDriverError.notLeader(leader: leader)) {
                _ = try await followerDriver.propose(Array("x".utf8))
            }
            await #expect(throws: RaftDriverError.notLeader(leader: leader)) {
                try await followerDriver.linearizableRead()
            }
        }
    }
}
