import ClusterModel
import Foundation
import Raft
@testable import RaftRuntime
import TestSupport
import Testing

@Suite("Write-ahead log and snapshot files")
struct WriteAheadLogTests {
    static func temporaryDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-wal-\(UUID().uuidString)").path
    }

    static func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [LogEntry] {
        range.map { LogEntry(term: Term(term), index: LogIndex($0), payload: .command(Array("value-\($0)-\(term)".utf8))) }
    }

    @Test("entries and hard state written and fsynced come back after reopening")
    func roundTrip() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let written = Self.entries(1...50, term: 1) + [LogEntry(term: 2, index: 51, payload: .configuration(.addLearner(NodeID("n4")))),
                                                       LogEntry(term: 2, index: 52, payload: .empty)]
        do {
            let (log, recovered) = try WriteAheadLog.open(directory: directory)
            #expect(recovered.entries.isEmpty)
            try log.append(entries: Array(written[..<20]), hardState: HardState(term: 1, votedFor: NodeID("n1"), commit: 10))
            try log.append(entries: Array(written[20...]), hardState: HardState(term: 2, votedFor: NodeID("n2"), commit: 40))
        }
        let (_, recovered) = try WriteAheadLog.open(directory: directory)
        #expect(recovered.entries == written)
        #expect(recovered.hardState == HardState(term: 2, votedFor: NodeID("n2"), commit: 40))
        #expect(recovered.tornBytes == 0)
    }

    @Test("entries appended at an index already written replace it and everything after")
    func overwrite() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let (log, _) = try WriteAheadLog.open(directory: directory)
            try log.append(entries: Self.entries(1...10, term: 1), hardState: nil)
            try log.append(entries: Self.entries(5...7, term: 3), hardState: nil)
        }
        let (_, recovered) = try WriteAheadLog.open(directory: directory)
        #expect(recovered.entries == Self.entries(1...4, term: 1) + Self.entries(5...7, term: 3))
    }

    @Test("the last record torn at every byte offset recovers to the record before it")
    func tornTailAtEveryOffset() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (log, _) = try WriteAheadLog.open(directory: directory)
        try log.append(entries: Self.entries(1...5, term: 1), hardState: HardState(term: 1, votedFor: nil, commit: 3))
        let path = log.segmentPaths.last!
        let before = try Data(contentsOf: URL(fileURLWithPath: path))
        try log.append(entries: Self.entries(6...6, term: 1), hardState: nil)
        let after = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(after.count > before.count)

        for cut in before.count..<after.count {
            let trial = Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: trial) }
            try FileManager.default.createDirectory(atPath: trial, withIntermediateDirectories: true)
            let trialPath = trial + "/" + URL(fileURLWithPath: path).lastPathComponent
            try after.prefix(cut).write(to: URL(fileURLWithPath: trialPath))
            let (reopened, recovered) = try WriteAheadLog.open(directory: trial)
            let complete = recovered.entries.count == 6
            // Either the new record made it whole (only its padding was cut) or it is gone entirely.
            #expect(recovered.entries == Self.entries(1...(complete ? 6 : 5), term: 1), "cut at \(cut)")
            #expect(recovered.hardState.commit == 3)
            if !complete { #expect(recovered.tornBytes == cut - before.count, "cut at \(cut)") }
            // The log is usable again after the cut.
            try reopened.append(entries: Self.entries(UInt64(recovered.entries.count + 1)...7, term: 2), hardState: nil)
            let (_, again) = try WriteAheadLog.open(directory: trial)
            #expect(again.entries.last?.index == 7)
        }
    }

    @Test("a flipped bit in the middle of the log refuses to start, naming the file and offset")
    func flippedBitRefuses() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path: String
        do {
            let (log, _) = try WriteAheadLog.open(directory: directory)
            for batch in 0..<10 {
                try log.append(entries: Self.entries(UInt64(batch * 10 + 1)...UInt64(batch * 10 + 10), term: 1), hardState: nil)
            }
            path = log.segmentPaths.last!
        }
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        var rng = SplitMix64(seed: 99)
        for _ in 0..<20 {
            var damaged = bytes
            let position = bytes.count / 4 + Int(rng.next() % UInt64(bytes.count / 2))
            damaged[position] ^= UInt8(1 << (rng.next() % 8))
            try damaged.write(to: URL(fileURLWithPath: path))
            #expect {
                _ = try WriteAheadLog.open(directory: directory)
            } throws: { error in
                let message = "\(error)"
                return (error as? StorageError)?.code == .corrupt && message.contains(path) && message.contains("offset")
            }
        }
        bytes[0] = bytes[0]  // unchanged original stays valid
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect(try WriteAheadLog.open(directory: directory).1.entries.count == 100)
    }

    @Test("segments roll over, and a snapshot marker lets covered segments be deleted without losing state")
    func segmentsAndCompaction() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let metadata = SnapshotMetadata(index: 150, term: 1, configuration: RaftConfiguration(voters: [NodeID("n1")]))
        do {
            let (log, _) = try WriteAheadLog.open(directory: directory, segmentSize: 1_024)
            for batch in 0..<20 {
                try log.append(
                    entries: Self.entries(UInt64(batch * 10 + 1)...UInt64(batch * 10 + 10), term: 1),
                    hardState: batch == 0 ? HardState(term: 1, votedFor: NodeID("n1"), commit: 5) : nil)
            }
            #expect(log.segmentPaths.count > 5)
            let before = log.segmentPaths.count
            try log.snapshotSaved(metadata)
            #expect(log.segmentPaths.count < before)
        }
        let (_, recovered) = try WriteAheadLog.open(directory: directory, segmentSize: 1_024)
        #expect(recovered.snapshot == metadata)
        #expect(recovered.entries == Self.entries(151...200, term: 1))
        #expect(recovered.hardState == HardState(term: 1, votedFor: NodeID("n1"), commit: 5))
    }

    @Test("snapshot files round-trip compressed, keep the newest two, and a damaged one is refused by name")
    func snapshotFiles() throws {
        let directory = Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try SnapshotStore(directory: directory)
        #expect(try store.loadLatest() == nil)
        let configuration = RaftConfiguration(voters: [NodeID("n1"), NodeID("n2")], learners: [NodeID("n3")])
        for index in [10, 20, 30] as [UInt64] {
            let data = Array(String(repeating: "state-\(index) ", count: 1_000).utf8)
            try store.save(Snapshot(metadata: SnapshotMetadata(index: LogIndex(index), term: 2, configuration: configuration), data: data))
        }
        #expect(try store.snapshotFiles().count == 2)
        let latest = try #require(try store.loadLatest())
        #expect(latest.metadata.index == 30)
        #expect(latest.metadata.configuration == configuration)
        #expect(latest.data == Array(String(repeating: "state-30 ", count: 1_000).utf8))
        let path = directory + "/" + (try store.snapshotFiles().last!)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(bytes.count < 2_000, "not compressed")
        bytes[bytes.count / 2] ^= 0x10
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try store.loadLatest()
        } throws: { error in
            "\(error)".contains(path) && "\(error)".contains("damaged")
        }
    }
}
