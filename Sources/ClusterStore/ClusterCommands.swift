public import ClusterModel
internal import Messages

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

    private static func envelope(_ requestID: UInt64, _ command: Flotilla_V1_ClusterCommand.OneOf_Command) -> [UInt8] {
        var envelope = Flotilla_V1_ClusterCommand()
        envelope.requestID = requestID
        envelope.command = command
        return envelope.storeBytes
    }
}
