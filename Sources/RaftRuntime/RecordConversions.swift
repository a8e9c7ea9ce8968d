import ClusterModel
import Messages
import Raft
import Foundation

/// Raft's values to and from their protobuf records (proto/flotilla/v1/raft.proto).
enum RaftRecords {
    static func record(_ entry: LogEntry) -> Flotilla_V1_LogEntryRecord {
        var record = Flotilla_V1_LogEntryRecord()
        record.term = entry.term.rawValue
        record.index = entry.index.rawValue
        switch entry.payload {
        case .empty: break
        case .command(let bytes): record.command = bytes.isEmpty ? Data() : Data(bytes)
        case .configuration(let change): record.configuration = changeRecord(change)
        }
        return record
    }

    static func entry(_ record: Flotilla_V1_LogEntryRecord) throws -> LogEntry {
        let payload: EntryPayload
        switch record.payload {
        case nil: payload = .empty
        case .command(let data): payload = .command(Array(data))
        case .configuration(let change): payload = .configuration(try self.change(change))
        }
        return LogEntry(term: Term(record.term), index: LogIndex(record.index), payload: payload)
    }

    static func changeRecord(_ change: ConfigurationChange) -> Flotilla_V1_ConfigurationChangeRecord {
        var record = Flotilla_V1_ConfigurationChangeRecord()
        switch change {
        case .addLearner(let id): record.kind = .addLearner; record.nodeID = id.rawValue
        case .promote(let id): record.kind = .promote; record.nodeID = id.rawValue
        case .remove(let id): record.kind = .remove; record.nodeID = id.rawValue
        }
        return record
    }

    static func change(_ record: Flotilla_V1_ConfigurationChangeRecord) throws -> ConfigurationChange {
        let id = NodeID(record.nodeID)
        switch record.kind {
        case .addLearner: return .addLearner(id)
        case .promote: return .promote(id)
        case .remove: return .remove(id)
        case .unspecified, .UNRECOGNIZED:
            throw StorageError(.corrupt, "configuration change of unknown kind \(record.kind.rawValue)")
        }
    }

    static func record(_ state: HardState) -> Flotilla_V1_HardStateRecord {
        var record = Flotilla_V1_HardStateRecord()
        record.term = state.term.rawValue
        record.votedFor = state.votedFor?.rawValue ?? ""
        record.commit = state.commit.rawValue
        return record
    }

    static func hardState(_ record: Flotilla_V1_HardStateRecord) -> HardState {
        HardState(
            term: Term(record.term), votedFor: record.votedFor.isEmpty ? nil : NodeID(record.votedFor),
            commit: LogIndex(record.commit))
    }

    static func record(_ metadata: SnapshotMetadata) -> Flotilla_V1_SnapshotMetadataRecord {
        var record = Flotilla_V1_SnapshotMetadataRecord()
        record.index = metadata.index.rawValue
        record.term = metadata.term.rawValue
        record.configuration.voters = metadata.configuration.voters.map(\.rawValue).sorted()
        record.configuration.learners = metadata.configuration.learners.map(\.rawValue).sorted()
        return record
    }

    static func metadata(_ record: Flotilla_V1_SnapshotMetadataRecord) -> SnapshotMetadata {
        SnapshotMetadata(
            index: LogIndex(record.index), term: Term(record.term),
            configuration: RaftConfiguration(
                voters: Set(record.configuration.voters.map(NodeID.init)),
                learners: Set(record.configuration.learners.map(NodeID.init))))
    }
}

