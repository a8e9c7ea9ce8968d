public import ClusterModel
internal import Messages
internal import SwiftProtobuf

/// The replicated state machine: the tables every controller keeps, built by applying the committed log.
///
/// `apply` is deterministic: the same entries in the same order give the same state, and the same snapshot
/// bytes, on every controller and every version that can apply them. Nothing in here reads a clock, draws
/// randomness or does I/O; anything a command needs to know (a time, a new id) is chosen by the leader and
/// carried in the command.
///
/// Entries are applied one by one in log order. Commands go to ``apply(index:command:)``; Raft's other entries
/// (the empty entry of a new leader, membership changes) to ``skip(index:)``, which only moves the applied index.
/// A thrown ``StoreError`` means the entry was not applied and nothing changed: the runtime must stop there,
/// because skipping an entry the others apply would make this controller diverge.
public struct ClusterState: Sendable, Equatable {
    /// The index of the last log entry the state includes; 0 before the first.
    public internal(set) var appliedIndex: UInt64

    /// Variables by key.
    var variableTable: [String: Variable]
    /// The controllers' address book.
    var controllerTable: [NodeID: ControllerRecord]
    /// Nodes that run agents.
    var nodeTable: [NodeID: NodeRecord]
    /// Join tokens by id.
    var tokenTable: [String: JoinTokenRecord]
    /// Node ids whose certificates are refused.
    var revokedTable: [NodeID: RevokedNode]
    /// The cluster CA, once the founder installed it.
    var caRecord: ClusterCARecord?
    /// Services by id: the desired state.
    var serviceTable: [String: Flotilla_V1_ServiceRecord]
    /// Tasks by id.
    var taskTable: [String: Flotilla_V1_TaskRecord]
    /// The latest events, oldest first, at most ``eventsKept`` (ClusterState+Events.swift).
    var eventLog: [Flotilla_V1_ClusterEvent]
    /// The id of the last event ever recorded; kept when older events are dropped, so ids are never reused.
    public internal(set) var lastEventID: UInt64

    /// An empty state, before the first entry.
    public init() {
        appliedIndex = 0
        variableTable = [:]
        controllerTable = [:]
        nodeTable = [:]
        tokenTable = [:]
        revokedTable = [:]
        caRecord = nil
        serviceTable = [:]
        taskTable = [:]
        eventLog = []
        lastEventID = 0
    }

    // MARK: - Applying the log

    /// Applies the committed command at `index` (a `ClusterCommand`, built with ``ClusterCommands``).
    ///
    /// Returns what the command decided and which rows it changed; a decision that changes nothing (a failed
    /// check-and-set, an invalid key) still applies the entry.
    /// - Throws: ``StoreError`` when the entry cannot be applied, leaving the state and applied index as they
    ///   were: `newerCommand` (a command or field from a newer Flotilla: upgrade this controller),
    ///   `undecodableCommand`, `emptyCommand`, or `outOfOrder` (`index` is not `appliedIndex + 1`).
    public mutating func apply(index: UInt64, command bytes: [UInt8]) throws(StoreError) -> ApplyOutcome {
        try checkNext(index)
        let command: Flotilla_V1_ClusterCommand
        do {
            command = try Flotilla_V1_ClusterCommand(serializedBytes: bytes)
        } catch {
            throw StoreError(
                code: .undecodableCommand,
                message: "log entry \(index) is not a ClusterCommand (\(bytes.count) bytes that do not decode: \(error)); this controller stops applying the log rather than skip it"
            )
        }
        if let unknown = command.unknownFieldDescription {
            throw StoreError(
                code: .newerCommand,
                message: "this controller (store version \(StoreVersion.commandSet)) cannot apply a command from a newer Flotilla: log entry \(index) carries \(unknown), which this version does not know; upgrade it"
            )
        }
        guard let kind = command.command else {
            throw StoreError(
                code: .emptyCommand,
                message: "log entry \(index) is a ClusterCommand with no command in it (request id \(command.requestID)); this controller stops applying the log rather than skip it"
            )
        }

        var changes: [StoreChange] = []
        let before = rowsBefore(kind)
        let result: ApplyResult
        switch kind {
        case .varPut(let put):
            result = applyVarPut(put, at: index, changes: &changes)
        case .varDelete(let delete):
            result = applyVarDelete(delete, at: index, changes: &changes)
        case .controllerUpsert(let upsert):
            result = applyControllerUpsert(upsert, at: index, changes: &changes)
        case .controllerRemove(let remove):
            result = applyControllerRemove(remove, at: index, changes: &changes)
        case .nodeJoin(let join):
            result = applyNodeJoin(join, at: index, changes: &changes)
        case .nodeUpsert(let upsert):
            result = applyNodeUpsert(upsert, at: index, changes: &changes)
        case .nodeRemove(let remove):
            result = applyNodeRemove(remove, at: index, changes: &changes)
        case .tokenCreate(let create):
            result = applyTokenCreate(create, at: index, changes: &changes)
        case .tokenRevoke(let revoke):
            result = applyTokenRevoke(revoke, at: index, changes: &changes)
        case .clusterCaSet(let set):
            result = applyClusterCASet(set, at: index, changes: &changes)
        case .serviceCreate(let create):
            result = applyServiceCreate(create, at: index, changes: &changes)
        case .serviceUpdate(let update):
            result = applyServiceUpdate(update, at: index, changes: &changes)
        case .serviceRemove(let remove):
            result = applyServiceRemove(remove, at: index, changes: &changes)
        case .serviceStatusUpdate(let update):
            result = applyServiceStatusUpdate(update, at: index, changes: &changes)
        case .tasksWrite(let write):
            result = applyTasksWrite(write, at: index, changes: &changes)
        case .taskStatusReport(let report):
            result = applyTaskStatusReport(report, at: index, changes: &changes)
        case .serviceScale(let scale):
            result = applyServiceScale(scale, at: index, changes: &changes)
        case .eventAppend(let append):
            result = applyEventAppend(append, at: index)
        }
        if case .ok = result { recordEvents(of: command, kind, before: before, at: index, changes: &changes) }
        appliedIndex = index
        return ApplyOutcome(index: index, requestID: command.requestID, result: result, changes: changes)
    }

    /// Moves the applied index over a log entry that is not a command (a new leader's empty entry, a membership
    /// change): the tables do not change.
    /// - Throws: ``StoreError/Code/outOfOrder`` when `index` is not `appliedIndex + 1`.
    public mutating func skip(index: UInt64) throws(StoreError) {
        try checkNext(index)
        appliedIndex = index
    }

    private func checkNext(_ index: UInt64) throws(StoreError) {
        guard index == appliedIndex &+ 1, index != 0 else {
            throw StoreError(
                code: .outOfOrder,
                message: "log entry \(index) offered to a store that has applied up to \(appliedIndex); entries apply one by one in log order, so the next must be \(appliedIndex &+ 1)"
            )
        }
    }

    // MARK: - Reading

    /// The variable under `key`, if there is one.
    public func variable(_ key: String) -> Variable? {
        variableTable[key]
    }

    /// The variables whose keys start with `prefix` (byte for byte), sorted by key in byte order; all of them
    /// for the empty prefix.
    public func variables(prefix: String = "") -> [Variable] {
        variableTable.values
            .filter { $0.key.utf8.starts(with: prefix.utf8) }
            .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
    }

    /// The controller with node id `id`, if the address book has it.
    public func controller(_ id: NodeID) -> ControllerRecord? {
        controllerTable[id]
    }

    /// Every controller in the address book, sorted by node id in byte order.
    public var controllers: [ControllerRecord] {
        controllerTable.values.sorted { $0.id.rawValue.utf8.lexicographicallyPrecedes($1.id.rawValue.utf8) }
    }
}
