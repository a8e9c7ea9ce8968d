internal import Messages
internal import SwiftProtobuf

// MARK: - Encoding

extension SwiftProtobuf.Message {
    /// The message's bytes. Encoding a proto3 message cannot fail below protobuf's 2 GiB limit, which the store's
    /// own limits keep far away, so a failure is a broken invariant, not an input to handle.
    var storeBytes: [UInt8] {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        do {
            return try serializedBytes(options: options)
        } catch {
            preconditionFailure("\(Self.protoMessageName) did not encode: \(error)")
        }
    }

    /// The number of the first field in this message (not in its children) that this version does not know;
    /// nil when there is none. A newer Flotilla's additions arrive as unknown fields.
    var firstUnknownField: UInt64? {
        let bytes = [UInt8](unknownFields.data)
        guard !bytes.isEmpty else { return nil }
        // Unknown fields are kept as they arrived: each starts with its tag, a varint of number << 3 | wire type.
        var tag: UInt64 = 0
        for (offset, byte) in bytes.prefix(10).enumerated() {
            tag |= UInt64(byte & 0x7F) << (7 * UInt64(offset))
            if byte & 0x80 == 0 { return tag >> 3 }
        }
        return 0  // An unreadable tag would not have decoded; report "some field" rather than trap.
    }
}

// MARK: - Unknown fields in commands

extension Flotilla_V1_ClusterCommand {
    /// Where this command carries a field this version does not know, as "field N of Message"; nil when none.
    /// An unknown `command` case arrives as an unknown field of the envelope.
    var unknownFieldDescription: String? {
        if let field = firstUnknownField { return "field \(field) of ClusterCommand" }
        switch command {
        case nil:
            return nil
        case .varPut(let put):
            return put.firstUnknownField.map { "field \($0) of VarPut" }
        case .varDelete(let delete):
            return delete.firstUnknownField.map { "field \($0) of VarDelete" }
        case .controllerUpsert(let upsert):
            if let field = upsert.firstUnknownField { return "field \(field) of ControllerUpsert" }
            return upsert.controller.firstUnknownField.map { "field \($0) of ControllerRecord" }
        case .controllerRemove(let remove):
            return remove.firstUnknownField.map { "field \($0) of ControllerRemove" }
        case .nodeJoin(let join):
            if let field = join.firstUnknownField { return "field \(field) of NodeJoin" }
            return join.node.unknownFieldDescription
        case .nodeUpsert(let upsert):
            if let field = upsert.firstUnknownField { return "field \(field) of NodeUpsert" }
            return upsert.node.unknownFieldDescription
        case .nodeRemove(let remove):
            return remove.firstUnknownField.map { "field \($0) of NodeRemove" }
        case .tokenCreate(let create):
            if let field = create.firstUnknownField { return "field \(field) of TokenCreate" }
            return create.token.firstUnknownField.map { "field \($0) of JoinTokenRecord" }
        case .tokenRevoke(let revoke):
            return revoke.firstUnknownField.map { "field \($0) of TokenRevoke" }
        case .clusterCaSet(let set):
            if let field = set.firstUnknownField { return "field \(field) of ClusterCASet" }
            return set.ca.firstUnknownField.map { "field \($0) of ClusterCA" }
        case .serviceCreate(let create):
            if let field = create.firstUnknownField { return "field \(field) of ServiceCreate" }
            return create.service.unknownFieldDescription
        case .serviceUpdate(let update):
            if let field = update.firstUnknownField { return "field \(field) of ServiceUpdate" }
            return update.spec.unknownFieldDescription
        case .serviceRemove(let remove):
            return remove.firstUnknownField.map { "field \($0) of ServiceRemove" }
        case .serviceStatusUpdate(let update):
            if let field = update.firstUnknownField { return "field \(field) of ServiceStatusUpdate" }
            return update.status.firstUnknownField.map { "field \($0) of UpdateStatus" }
        case .tasksWrite(let write):
            if let field = write.firstUnknownField { return "field \(field) of TasksWrite" }
            return write.tasks.lazy.compactMap { $0.firstUnknownField.map { "field \($0) of TaskRecord" } }.first
        case .taskStatusReport(let report):
            if let field = report.firstUnknownField { return "field \(field) of TaskStatusReport" }
            return report.statuses.lazy.compactMap { $0.firstUnknownField.map { "field \($0) of TaskStatus" } }.first
        case .serviceScale(let scale):
            return scale.firstUnknownField.map { "field \($0) of ServiceScale" }
        case .eventAppend(let append):
            if let field = append.firstUnknownField { return "field \(field) of EventAppend" }
            return append.event.firstUnknownField.map { "field \($0) of ClusterEvent" }
        }
    }
}

extension Flotilla_V1_ClusterSnapshot {
    /// Where this snapshot carries a field this version does not know; nil when none.
    var unknownFieldDescription: String? {
        if let field = firstUnknownField { return "field \(field) of ClusterSnapshot" }
        for variable in variables {
            if let field = variable.firstUnknownField { return "field \(field) of Variable" }
        }
        for controller in controllers {
            if let field = controller.firstUnknownField { return "field \(field) of ControllerRecord" }
        }
        for node in nodes {
            if let unknown = node.unknownFieldDescription { return unknown }
        }
        for token in tokens {
            if let field = token.firstUnknownField { return "field \(field) of JoinTokenRecord" }
        }
        for revoked in revokedNodes {
            if let field = revoked.firstUnknownField { return "field \(field) of RevokedNode" }
        }
        for service in services {
            if let unknown = service.unknownFieldDescription { return unknown }
        }
        for task in tasks {
            if let field = task.firstUnknownField { return "field \(field) of TaskRecord" }
        }
        for event in events {
            if let field = event.firstUnknownField { return "field \(field) of ClusterEvent" }
        }
        return ca.firstUnknownField.map { "field \($0) of ClusterCA" }
    }
}

extension Flotilla_V1_NodeRecord {
    var unknownFieldDescription: String? {
        if let field = firstUnknownField { return "field \(field) of NodeRecord" }
        for label in labels {
            if let field = label.firstUnknownField { return "field \(field) of Label" }
        }
        return nil
    }
}

extension Flotilla_V1_ServiceRecord {
    var unknownFieldDescription: String? {
        if let field = firstUnknownField { return "field \(field) of ServiceRecord" }
        if let field = updateStatus.firstUnknownField { return "field \(field) of UpdateStatus" }
        return spec.unknownFieldDescription ?? previousSpec.unknownFieldDescription
    }
}

extension Flotilla_V1_ServiceSpec {
    /// A field this version does not know, anywhere in the spec; nil when none.
    var unknownFieldDescription: String? {
        if let field = firstUnknownField { return "field \(field) of ServiceSpec" }
        let parts: [(String, UInt64?)] = [
            ("Resources", resources.firstUnknownField), ("HealthCheck", healthCheck.firstUnknownField),
            ("RestartPolicy", restartPolicy.firstUnknownField), ("UpdateConfig", updateConfig.firstUnknownField),
            ("UpdateConfig", rollbackConfig.firstUnknownField), ("LoadBalancerSpec", loadBalancer.firstUnknownField),
            ("HealthCheck", readinessCheck.firstUnknownField), ("AutoscaleSpec", autoscale.firstUnknownField),
        ] + env.map { ("EnvVar", $0.firstUnknownField) } + ports.map { ("PortSpec", $0.firstUnknownField) }
        return parts.first { $0.1 != nil }.map { "field \($0.1!) of \($0.0)" }
    }
}
