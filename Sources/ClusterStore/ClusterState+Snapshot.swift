internal import ClusterModel
internal import Messages
internal import SwiftProtobuf

// MARK: - Snapshots

extension ClusterState {
    /// The whole state as the bytes of a `ClusterSnapshot` (store.proto), format ``StoreVersion/snapshotFormat``.
    ///
    /// Deterministic: every table is sorted by key in byte order, so equal states give identical bytes on every
    /// controller. The bytes are not compressed: the Raft runtime zlib-compresses them when it writes a snapshot
    /// file or sends one to another controller.
    public func snapshot() -> [UInt8] {
        var snapshot = Flotilla_V1_ClusterSnapshot()
        snapshot.formatVersion = StoreVersion.snapshotFormat
        snapshot.appliedIndex = appliedIndex
        snapshot.variables = variables().map(\.proto)
        snapshot.controllers = controllers.map(\.proto)
        snapshot.nodes = nodes.map(\.proto)
        snapshot.tokens = tokens.map(\.proto)
        snapshot.revokedNodes = revokedNodes.map(\.proto)
        if let caRecord { snapshot.ca = caRecord.proto }
        snapshot.services = serviceTable.values.sorted { $0.id < $1.id }
        snapshot.tasks = tasks
        snapshot.events = eventLog
        snapshot.lastEventID = lastEventID
        return snapshot.storeBytes
    }

    /// The state a snapshot holds, as written by ``snapshot()`` (uncompressed).
    ///
    /// Installing a snapshot yields no ``StoreChange``s: the shell tells its watchers to read the state afresh.
    /// - Throws: ``StoreError/Code/newerSnapshot`` for a format this version does not know or a field it does not
    ///   know (upgrade this controller); ``StoreError/Code/invalidSnapshot`` for bytes that do not decode, or a
    ///   snapshot that contradicts itself (a key twice, an index beyond its applied index).
    public init(snapshot bytes: [UInt8]) throws(StoreError) {
        let snapshot: Flotilla_V1_ClusterSnapshot
        do {
            snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: bytes)
        } catch {
            throw StoreError(code: .invalidSnapshot, message: "the snapshot is not a ClusterSnapshot (\(bytes.count) bytes that do not decode: \(error))")
        }
        let format = snapshot.formatVersion
        guard StoreVersion.readableSnapshotFormats.contains(format) else {
            if format == 0 {
                throw StoreError(code: .invalidSnapshot, message: "the snapshot has no format version; it was not written by a Flotilla controller")
            }
            throw StoreError(
                code: .newerSnapshot,
                message: "this controller reads snapshot formats \(StoreVersion.readableSnapshotFormats.lowerBound)–\(StoreVersion.readableSnapshotFormats.upperBound), not format \(format), which a newer Flotilla wrote; upgrade it"
            )
        }
        if let unknown = snapshot.unknownFieldDescription {
            throw StoreError(
                code: .newerSnapshot,
                message: "this controller (snapshot format \(StoreVersion.snapshotFormat)) cannot read a snapshot that carries \(unknown), which this version does not know; upgrade it"
            )
        }

        self.init()
        appliedIndex = snapshot.appliedIndex
        for proto in snapshot.variables {
            let variable = Variable(proto: proto)
            guard variableTable[variable.key] == nil else {
                throw Self.invalid("holds variable \(quoted(variable.key, limit: 64)) twice")
            }
            guard 1 <= variable.createIndex, variable.createIndex <= variable.modifyIndex, variable.modifyIndex <= appliedIndex else {
                throw Self.invalid(
                    "gives variable \(quoted(variable.key, limit: 64)) create index \(variable.createIndex) and modify index \(variable.modifyIndex), which do not fit its applied index \(appliedIndex)"
                )
            }
            variableTable[variable.key] = variable
        }
        for proto in snapshot.controllers {
            let controller = ControllerRecord(proto: proto)
            guard controllerTable[controller.id] == nil else {
                throw Self.invalid("holds controller \(quoted(controller.id.rawValue, limit: 64)) twice")
            }
            controllerTable[controller.id] = controller
        }
        for proto in snapshot.nodes {
            guard let node = NodeRecord(proto: proto) else {
                throw StoreError(code: .newerSnapshot, message: "the snapshot's node \(quoted(proto.id, limit: 64)) has a status or availability this version does not know; upgrade it")
            }
            guard nodeTable[node.id] == nil else { throw Self.invalid("holds node \(quoted(node.id.rawValue, limit: 64)) twice") }
            nodeTable[node.id] = node
        }
        for proto in snapshot.tokens {
            guard let token = JoinTokenRecord(proto: proto) else {
                throw StoreError(code: .newerSnapshot, message: "the snapshot's join token \(quoted(proto.id, limit: 40)) has a role this version does not know; upgrade it")
            }
            guard tokenTable[token.id] == nil else { throw Self.invalid("holds join token \(quoted(token.id, limit: 40)) twice") }
            tokenTable[token.id] = token
        }
        for proto in snapshot.revokedNodes {
            let revoked = RevokedNode(proto: proto)
            guard revokedTable[revoked.id] == nil else { throw Self.invalid("revokes node \(quoted(revoked.id.rawValue, limit: 64)) twice") }
            revokedTable[revoked.id] = revoked
        }
        if snapshot.hasCa { caRecord = ClusterCARecord(proto: snapshot.ca) }
        var virtualIPs: VirtualIPAllocator
        do throws(NetworkAddressError) {
            virtualIPs = try Self.virtualIPAllocator(holding: [])
        } catch {
            preconditionFailure("the service network \(Self.serviceNetwork) does not parse: \(error)")
        }
        for service in snapshot.services {
            guard serviceTable[service.id] == nil else { throw Self.invalid("holds service \(quoted(service.id, limit: 64)) twice") }
            // Services from before virtual IPs have none (they get one at their next update).
            if !service.virtualIp.isEmpty {
                guard let address = IPv4Address(service.virtualIp) else {
                    throw Self.invalid("gives service \(quoted(service.id, limit: 64)) the virtual IP \(quoted(service.virtualIp, limit: 20)), which is no IPv4 address")
                }
                do throws(NetworkAddressError) {
                    try virtualIPs.claim(address)
                } catch {
                    throw Self.invalid("gives service \(quoted(service.id, limit: 64)) the virtual IP \(address): \(error.message)")
                }
            }
            serviceTable[service.id] = service
        }
        for task in snapshot.tasks {
            guard taskTable[task.id] == nil else { throw Self.invalid("holds task \(quoted(task.id, limit: 64)) twice") }
            taskTable[task.id] = task
        }
        try restoreEvents(snapshot.events, lastEventID: snapshot.lastEventID)
    }

    /// The event history: ids without gaps up to `lastEventID`, from entries the snapshot includes.
    private mutating func restoreEvents(_ events: [Flotilla_V1_ClusterEvent], lastEventID: UInt64) throws(StoreError) {
        let sorted = events.sorted { $0.id < $1.id }
        guard sorted.count <= lastEventID else {
            throw Self.invalid("holds \(sorted.count) events but its last event id is \(lastEventID)")
        }
        let firstID = lastEventID - UInt64(sorted.count) + 1
        for (offset, event) in sorted.enumerated() {
            guard event.id == firstID + UInt64(offset) else {
                throw Self.invalid("holds events \(firstID)–\(lastEventID) with event \(firstID + UInt64(offset)) missing or twice (found \(event.id))")
            }
            guard event.index <= appliedIndex else {
                throw Self.invalid("holds event \(event.id) from log entry \(event.index), beyond its applied index \(appliedIndex)")
            }
        }
        eventLog = sorted
        self.lastEventID = lastEventID
    }

    private static func invalid(_ problem: String) -> StoreError {
        StoreError(code: .invalidSnapshot, message: "the snapshot \(problem); it is damaged")
    }
}
