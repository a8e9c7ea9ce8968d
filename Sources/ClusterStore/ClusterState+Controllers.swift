internal import ClusterModel
internal import Messages

// MARK: - Controllers: ControllerUpsert and ControllerRemove

extension ClusterState {
    mutating func applyControllerUpsert(_ upsert: Flotilla_V1_ControllerUpsert, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        guard upsert.hasController else { return .invalid("a ControllerUpsert command must carry a controller record") }
        let record = ControllerRecord(proto: upsert.controller)
        do {
            try record.validate()
        } catch {
            return .invalid(error.message)
        }
        guard controllerTable[record.id] != record else { return .ok(index: index) }  // nothing to tell watchers
        controllerTable[record.id] = record
        changes.append(StoreChange(table: .controllers, key: record.id.rawValue, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyControllerRemove(_ remove: Flotilla_V1_ControllerRemove, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        if let problem = ControllerRecord.problem(id: remove.id) { return .invalid(problem) }
        let id = NodeID(remove.id)
        guard controllerTable[id] != nil else { return .notFound }
        controllerTable[id] = nil
        changes.append(StoreChange(table: .controllers, key: remove.id, kind: .delete, index: index))
        return .ok(index: index)
    }
}
