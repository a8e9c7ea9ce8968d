public import ClusterModel
public import Messages

/// Encoders for the commands the store applies, so that callers never build protobuf by hand.
///
/// Each returns the bytes of one `ClusterCommand` (store.proto), ready to propose through Raft. They do not
/// validate: `apply` does, identically on every controller; callers that want to refuse a bad request before
/// proposing it use ``Variable/validate(key:value:)`` and ``ControllerRecord/validate()``.
public enum ClusterCommands {
    /// Sets variable `key` to `value`.
    /// - Parameters:
    ///   - cas: check-and-set: apply only if the variable's modify index equals this; 0 means "only if absent";
    ///     nil means unconditionally.
    ///   - requestID: the proposer's correlation id, returned in the ``ApplyOutcome``.
    public static func varPut(key: String, value: [UInt8], cas: UInt64? = nil, requestID: UInt64 = 0) -> [UInt8] {
        var put = Flotilla_V1_VarPut()
        put.key = key
        put.value = .init(value)
        if let cas { put.casIndex = cas }
        return envelope(requestID, .varPut(put))
    }

    /// Deletes variable `key`.
    /// - Parameters:
    ///   - cas: check-and-set: delete only if the variable's modify index equals this; nil means unconditionally.
    ///   - requestID: the proposer's correlation id, returned in the ``ApplyOutcome``.
    public static func varDelete(key: String, cas: UInt64? = nil, requestID: UInt64 = 0) -> [UInt8] {
        var delete = Flotilla_V1_VarDelete()
        delete.key = key
        if let cas { delete.casIndex = cas }
        return envelope(requestID, .varDelete(delete))
    }

    /// Adds `controller` to the address book, or replaces its record.
    public static func controllerUpsert(_ controller: ControllerRecord, requestID: UInt64 = 0) -> [UInt8] {
        var upsert = Flotilla_V1_ControllerUpsert()
        upsert.controller = controller.proto
        return envelope(requestID, .controllerUpsert(upsert))
    }

    /// Removes controller `id` from the address book.
    public static func controllerRemove(id: NodeID, requestID: UInt64 = 0) -> [UInt8] {
        var remove = Flotilla_V1_ControllerRemove()
        remove.id = id.rawValue
        return envelope(requestID, .controllerRemove(remove))
    }

    /// A node joins with token `tokenID`: consumes one use; for an agent (`node` given) adds its record.
    /// `nowMs` is the leader's clock, against which expiry is judged.
    public static func nodeJoin(
        tokenID: String, nowMs: UInt64, nodeID: NodeID, role: NodeRole, node: NodeRecord?, requestID: UInt64 = 0
    ) -> [UInt8] {
        var join = Flotilla_V1_NodeJoin()
        join.tokenID = tokenID
        join.nowMs = nowMs
        join.nodeID = nodeID.rawValue
        join.role = role.rawValue
        if let node { join.node = node.proto }
        return envelope(requestID, .nodeJoin(join))
    }

    /// Replaces node `node.id`'s record.
    public static func nodeUpsert(_ node: NodeRecord, requestID: UInt64 = 0) -> [UInt8] {
        var upsert = Flotilla_V1_NodeUpsert()
        upsert.node = node.proto
        return envelope(requestID, .nodeUpsert(upsert))
    }

    /// Removes node `id` (if it is in the nodes table) and revokes its identity.
    public static func nodeRemove(id: NodeID, nowMs: UInt64, requestID: UInt64 = 0) -> [UInt8] {
        var remove = Flotilla_V1_NodeRemove()
        remove.id = id.rawValue
        remove.nowMs = nowMs
        return envelope(requestID, .nodeRemove(remove))
    }

    /// Creates a join token.
    public static func tokenCreate(_ token: JoinTokenRecord, requestID: UInt64 = 0) -> [UInt8] {
        var create = Flotilla_V1_TokenCreate()
        create.token = token.proto
        return envelope(requestID, .tokenCreate(create))
    }

    /// Revokes join token `id`.
    public static func tokenRevoke(id: String, requestID: UInt64 = 0) -> [UInt8] {
        var revoke = Flotilla_V1_TokenRevoke()
        revoke.id = id
        return envelope(requestID, .tokenRevoke(revoke))
    }

    /// Installs the cluster CA (once; the same CA again is a no-op).
    public static func clusterCASet(_ ca: ClusterCARecord, requestID: UInt64 = 0) -> [UInt8] {
        var set = Flotilla_V1_ClusterCASet()
        set.ca = ca.proto
        return envelope(requestID, .clusterCaSet(set))
    }

    /// Creates a service (version 1).
    public static func serviceCreate(_ service: Flotilla_V1_ServiceRecord, requestID: UInt64 = 0) -> [UInt8] {
        var create = Flotilla_V1_ServiceCreate()
        create.service = service
        return envelope(requestID, .serviceCreate(create))
    }

    /// Replaces service `id`'s spec; `expectedVersion` 0 means unconditionally; `rollback` marks a rollback.
    public static func serviceUpdate(
        id: String, spec: Flotilla_V1_ServiceSpec, expectedVersion: UInt64, nowMs: UInt64, rollback: Bool = false,
        requestID: UInt64 = 0
    ) -> [UInt8] {
        var update = Flotilla_V1_ServiceUpdate()
        update.id = id
        update.spec = spec
        update.expectedVersion = expectedVersion
        update.nowMs = nowMs
        update.rollback = rollback
        return envelope(requestID, .serviceUpdate(update))
    }

    /// Records a rolling update's progress for version `version` of service `id`.
    public static func serviceStatusUpdate(id: String, version: UInt64, status: Flotilla_V1_UpdateStatus, requestID: UInt64 = 0) -> [UInt8] {
        var update = Flotilla_V1_ServiceStatusUpdate()
        update.id = id
        update.version = version
        update.status = status
        return envelope(requestID, .serviceStatusUpdate(update))
    }

    /// Sets service `id`'s replicas to `replicas` if it is at `expectedVersion` (the autoscaler's decision), with why.
    public static func serviceScale(
        id: String, expectedVersion: UInt64, replicas: UInt32, reason: String, nowMs: UInt64, requestID: UInt64 = 0
    ) -> [UInt8] {
        var scale = Flotilla_V1_ServiceScale()
        scale.id = id
        scale.expectedVersion = expectedVersion
        scale.replicas = replicas
        scale.reason = reason
        scale.nowMs = nowMs
        return envelope(requestID, .serviceScale(scale))
    }

    /// `command` (a ClusterCommand's bytes) with `proposed_at_ms` set: the field is appended to the encoding,
    /// which protobuf reads as setting it (no decode and re-encode of a large plan). The command must not carry
    /// the field already; commands built here never do.
    public static func stamped(_ command: [UInt8], proposedAtMs: UInt64) -> [UInt8] {
        var bytes = command
        bytes.reserveCapacity(command.count + 11)
        bytes.append(0x10)  // field 2, varint
        var value = proposedAtMs
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
        return bytes
    }

    /// Removes service `id`'s record.
    public static func serviceRemove(id: String, requestID: UInt64 = 0) -> [UInt8] {
        var remove = Flotilla_V1_ServiceRemove()
        remove.id = id
        return envelope(requestID, .serviceRemove(remove))
    }

    /// The orchestrator's plan: these tasks written whole, those deleted; all or nothing.
    public static func tasksWrite(_ tasks: [Flotilla_V1_TaskRecord], deleting ids: [String] = [], requestID: UInt64 = 0) -> [UInt8] {
        var write = Flotilla_V1_TasksWrite()
        write.tasks = tasks
        write.deleteIds = ids
        return envelope(requestID, .tasksWrite(write))
    }

    /// What node `nodeID`'s agent saw its tasks do.
    public static func taskStatusReport(nodeID: NodeID, _ statuses: [Flotilla_V1_TaskStatus], requestID: UInt64 = 0) -> [UInt8] {
        var report = Flotilla_V1_TaskStatusReport()
        report.nodeID = nodeID.rawValue
        report.statuses = statuses
        return envelope(requestID, .taskStatusReport(report))
    }

    private static func envelope(_ requestID: UInt64, _ command: Flotilla_V1_ClusterCommand.OneOf_Command) -> [UInt8] {
        var envelope = Flotilla_V1_ClusterCommand()
        envelope.requestID = requestID
        envelope.command = command
        return envelope.storeBytes
    }
}

extension ClusterCommands {
    /// Records `event` as it is (a leader elected): the store gives it its id and index, and the proposal's
    /// time when it carries none.
    public static func eventAppend(_ event: Flotilla_V1_ClusterEvent, requestID: UInt64 = 0) -> [UInt8] {
        var append = Flotilla_V1_EventAppend()
        append.event = event
        return envelope(requestID, .eventAppend(append))
    }
}
