import ClusterModel
import ClusterStore
import Messages
import SwiftProtobuf
import Testing

@Suite("Snapshots")
struct SnapshotTests {
    private func sample() throws -> ClusterState {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "b", value: .init("2")))
        try log.run(ClusterCommands.varPut(key: "a", value: .init("1")))
        try log.run(ClusterCommands.varPut(key: "b", value: .init("22")))
        try log.run(ClusterCommands.controllerUpsert(ControllerRecord(id: NodeID("c2"), address: "h2:7400", isVoter: true)))
        try log.run(ClusterCommands.controllerUpsert(ControllerRecord(id: NodeID("c1"), address: "h1:7400", isVoter: false)))
        try log.skip()
        return log.state
    }

    @Test("a snapshot restores the same state, which snapshots to the same bytes")
    func roundTrip() throws {
        let state = try sample()
        let restored = try ClusterState(snapshot: state.snapshot())
        #expect(restored == state)
        #expect(restored.appliedIndex == 6)
        #expect(restored.variable("b") == Variable(key: "b", value: .init("22"), createIndex: 1, modifyIndex: 3))
        #expect(restored.snapshot() == state.snapshot())
    }

    @Test("an empty state round-trips")
    func empty() throws {
        #expect(try ClusterState(snapshot: ClusterState().snapshot()) == ClusterState())
    }

    @Test("a snapshot lists every table sorted by key, whatever order it was read in")
    func sorted() throws {
        let bytes = try sample().snapshot()
        let decoded = try Flotilla_V1_ClusterSnapshot(serializedBytes: bytes)
        #expect(decoded.formatVersion == StoreVersion.snapshotFormat)
        #expect(decoded.variables.map(\.key) == ["a", "b"])
        #expect(decoded.controllers.map(\.id) == ["c1", "c2"])
        var shuffled = decoded
        shuffled.variables.reverse()
        shuffled.controllers.reverse()
        let restored = try ClusterState(snapshot: try shuffled.serializedBytes())
        #expect(restored.snapshot() == bytes)
    }

    @Test("a snapshot in a newer format is refused: upgrade")
    func newerFormat() throws {
        var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: try sample().snapshot())
        snapshot.formatVersion = StoreVersion.snapshotFormat + 1
        #expect(throws: StoreError(code: .newerSnapshot, message: "this controller reads snapshot formats 1–\(StoreVersion.snapshotFormat), not format \(StoreVersion.snapshotFormat + 1), which a newer Flotilla wrote; upgrade it")) {
            try ClusterState(snapshot: try snapshot.serializedBytes())
        }
    }

    @Test("a snapshot carrying a table this version does not know is refused: upgrade")
    func unknownTable() throws {
        // A table a newer Flotilla adds (field 13, the next free number), with one record in it.
        let bytes = try sample().snapshot() + RawProtobuf.lengthDelimited(field: 13, RawProtobuf.lengthDelimited(field: 1, .init("web")))
        let error = try #require(throws: StoreError.self) { try ClusterState(snapshot: bytes) }
        #expect(error.code == .newerSnapshot)
        #expect(error.message.contains("field 13 of ClusterSnapshot"))
        #expect(error.message.hasSuffix("upgrade it"))
    }

    @Test("a record carrying a field this version does not know is refused")
    func unknownRecordField() throws {
        var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: try sample().snapshot())
        let variable: [UInt8] = try snapshot.variables[0].serializedBytes() + RawProtobuf.varintField(field: 9, 1)
        snapshot.variables.removeFirst()
        let bytes: [UInt8] = try snapshot.serializedBytes() + RawProtobuf.lengthDelimited(field: 3, variable)
        let error = try #require(throws: StoreError.self) { try ClusterState(snapshot: bytes) }
        #expect(error.code == .newerSnapshot)
        #expect(error.message.contains("field 9 of Variable"))
    }

    @Test("bytes that are not a snapshot are refused", arguments: [[] as [UInt8], [0xFF, 0xFF], [0x08]])
    func garbage(bytes: [UInt8]) throws {
        let error = try #require(throws: StoreError.self) { try ClusterState(snapshot: bytes) }
        #expect(error.code == .invalidSnapshot)
    }

    @Test("a snapshot that holds a key twice is refused as damaged")
    func duplicateKey() throws {
        var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: try sample().snapshot())
        snapshot.variables.append(snapshot.variables[0])
        #expect(throws: StoreError(code: .invalidSnapshot, message: "the snapshot holds variable \"a\" twice; it is damaged")) {
            try ClusterState(snapshot: try snapshot.serializedBytes())
        }
        snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: try sample().snapshot())
        snapshot.controllers.append(snapshot.controllers[1])
        #expect(throws: StoreError.self) { try ClusterState(snapshot: try snapshot.serializedBytes()) }
    }

    @Test("a snapshot whose indexes do not fit its applied index is refused as damaged")
    func indexesBeyondApplied() throws {
        var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: try sample().snapshot())
        snapshot.appliedIndex = 2  // variable b was modified at 3
        let error = try #require(throws: StoreError.self) { try ClusterState(snapshot: try snapshot.serializedBytes()) }
        #expect(error.code == .invalidSnapshot)
        #expect(error.message.contains("variable \"b\""))
    }

    @Test("a restored store goes on from the snapshot's applied index")
    func continuesAfterRestore() throws {
        var log = Log(state: try ClusterState(snapshot: try sample().snapshot()))
        #expect(throws: StoreError.self) { try log.state.apply(index: 6, command: ClusterCommands.varDelete(key: "a")) }
        #expect(try log.run(ClusterCommands.varPut(key: "a", value: [], cas: 2)).result == .ok(index: 7))
        #expect(log.state.variable("a")?.createIndex == 2)
    }
}
