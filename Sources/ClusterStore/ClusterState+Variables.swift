internal import Messages

// MARK: - Variables: VarPut and VarDelete

extension ClusterState {
    mutating func applyVarPut(_ put: Flotilla_V1_VarPut, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        let value = [UInt8](put.value)
        if let problem = Variable.problem(key: put.key, value: value) { return .invalid(problem) }
        let current = variableTable[put.key]
        if put.hasCasIndex, put.casIndex != (current?.modifyIndex ?? 0) {
            return .casFailed(currentIndex: current?.modifyIndex ?? 0)
        }
        variableTable[put.key] = Variable(
            key: put.key, value: value, createIndex: current?.createIndex ?? index, modifyIndex: index
        )
        changes.append(StoreChange(table: .variables, key: put.key, kind: .put, index: index))
        return .ok(index: index)
    }

    mutating func applyVarDelete(_ delete: Flotilla_V1_VarDelete, at index: UInt64, changes: inout [StoreChange]) -> ApplyResult {
        if let problem = Variable.problem(key: delete.key, value: nil) { return .invalid(problem) }
        let current = variableTable[delete.key]
        if delete.hasCasIndex, delete.casIndex != (current?.modifyIndex ?? 0) {
            return .casFailed(currentIndex: current?.modifyIndex ?? 0)
        }
        guard current != nil else { return .notFound }
        variableTable[delete.key] = nil
        changes.append(StoreChange(table: .variables, key: delete.key, kind: .delete, index: index))
        return .ok(index: index)
    }
}
