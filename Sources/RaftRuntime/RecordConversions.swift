import ClusterModel
public import Messages
public import Raft
import Foundation

/// Raft's values to and from their protobuf records (proto/flotilla/v1/raft.proto).
public enum RaftRecords {
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


extension RaftRecords {
    /// A Raft message for the wire.
    public static func record(_ message: RaftMessage) -> Flotilla_V1_RaftMessageRecord {
        var record = Flotilla_V1_RaftMessageRecord()
        record.from = message.from.rawValue
        record.to = message.to.rawValue
        record.term = message.term.rawValue
        switch message.kind {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            var append = Flotilla_V1_RaftAppend()
            append.prevIndex = prevIndex.rawValue
            append.prevTerm = prevTerm.rawValue
            append.entries = entries.map { self.record($0) }
            append.commit = commit.rawValue
            record.append = append
        case .appendResponse(let accepted, let index, let hint):
            var response = Flotilla_V1_RaftAppendResponse()
            response.accepted = accepted
            response.index = index.rawValue
            response.hint = hint.rawValue
            record.appendResponse = response
        case .heartbeat(let commit, let context):
            var heartbeat = Flotilla_V1_RaftHeartbeat()
            heartbeat.commit = commit.rawValue
            if let context { heartbeat.readContext = context }
            record.heartbeat = heartbeat
        case .heartbeatResponse(let context):
            var response = Flotilla_V1_RaftHeartbeatResponse()
            if let context { response.readContext = context }
            record.heartbeatResponse = response
        case .requestVote(let lastIndex, let lastTerm, let preVote, let transfer):
            var vote = Flotilla_V1_RaftRequestVote()
            vote.lastIndex = lastIndex.rawValue
            vote.lastTerm = lastTerm.rawValue
            vote.preVote = preVote
            vote.transfer = transfer
            record.requestVote = vote
        case .voteResponse(let granted, let preVote):
            var response = Flotilla_V1_RaftVoteResponse()
            response.granted = granted
            response.preVote = preVote
            record.voteResponse = response
        case .installSnapshot(let metadata, let offset, let chunk, let done):
            var install = Flotilla_V1_RaftInstallSnapshot()
            install.metadata = self.record(metadata)
            install.offset = UInt64(offset)
            install.chunk = Data(chunk)
            install.done = done
            record.installSnapshot = install
        case .snapshotResponse(let offset, let installed, let rejected):
            var response = Flotilla_V1_RaftSnapshotResponse()
            response.offset = UInt64(offset)
            if let installed { response.installedIndex = installed.rawValue }
            response.rejected = rejected
            record.snapshotResponse = response
        case .timeoutNow:
            record.timeoutNow = Flotilla_V1_RaftTimeoutNow()
        }
        return record
    }

    /// A Raft message from the wire; throws on a message with no kind or a malformed entry.
    public static func message(_ record: Flotilla_V1_RaftMessageRecord) throws -> RaftMessage {
        let kind: RaftMessage.Kind
        switch record.kind {
        case .append(let append):
            kind = .append(
                prevIndex: LogIndex(append.prevIndex), prevTerm: Term(append.prevTerm),
                entries: try append.entries.map(entry), commit: LogIndex(append.commit))
        case .appendResponse(let response):
            kind = .appendResponse(accepted: response.accepted, index: LogIndex(response.index), hint: LogIndex(response.hint))
        case .heartbeat(let heartbeat):
            kind = .heartbeat(commit: LogIndex(heartbeat.commit), readContext: heartbeat.hasReadContext ? heartbeat.readContext : nil)
        case .heartbeatResponse(let response):
            kind = .heartbeatResponse(readContext: response.hasReadContext ? response.readContext : nil)
        case .requestVote(let vote):
            kind = .requestVote(lastIndex: LogIndex(vote.lastIndex), lastTerm: Term(vote.lastTerm), preVote: vote.preVote, transfer: vote.transfer)
        case .voteResponse(let response):
            kind = .voteResponse(granted: response.granted, preVote: response.preVote)
        case .installSnapshot(let install):
            guard install.offset <= UInt64(Int.max) else { throw StorageError(.corrupt, "snapshot offset out of range") }
            kind = .installSnapshot(metadata: metadata(install.metadata), offset: Int(install.offset), chunk: Array(install.chunk), done: install.done)
        case .snapshotResponse(let response):
            guard response.offset <= UInt64(Int.max) else { throw StorageError(.corrupt, "snapshot offset out of range") }
            kind = .snapshotResponse(
                offset: Int(response.offset), installedIndex: response.hasInstalledIndex ? LogIndex(response.installedIndex) : nil,
                rejected: response.rejected)
        case .timeoutNow:
            kind = .timeoutNow
        case nil:
            throw StorageError(.corrupt, "Raft message from \(record.from) carries no kind (a newer controller?)")
        }
        return RaftMessage(from: NodeID(record.from), to: NodeID(record.to), term: Term(record.term), kind: kind)
    }
}
