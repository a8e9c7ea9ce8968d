import ClusterModel
import ClusterStore
import Foundation
import PKI
import Raft
import RaftRuntime
import Transport
import Wire

/// The admin API a controller serves to the `flotilla` CLI.
struct AdminService: Sendable {
    let credentials: Credentials
    let listenAddress: String
    let startedAt: ContinuousClock.Instant
    let raft: ControllerRaft
    /// The cluster CA: its pin goes into join tokens, and a backup carries it.
    let authority: ClusterAuthority
    /// Node heartbeats, for `node ls`.
    let monitor: NodeMonitor
    /// The autoscalers' recommendations, for `service autoscale`.
    let autoscale: AutoscaleLoop

    func register(into router: inout RPCRouter) {
        router.register(Methods.adminStatus) { _, _ in status() }
        router.register(Methods.varPut) { request, _ in try await varPut(request) }
        router.register(Methods.varDelete) { request, _ in try await varDelete(request) }
        router.register(Methods.varGet) { request, _ in try await varGet(request) }
        router.register(Methods.varList) { request, _ in try await varList(request) }
        router.register(Methods.controllerList) { _, _ in await controllerList() }
        router.register(Methods.controllerRemove) { request, _ in try await controllerRemove(request) }
        router.register(Methods.transferLeadership) { request, _ in try await transferLeadership(request) }
        router.register(Methods.tokenCreate) { request, _ in try await tokenCreate(request) }
        router.register(Methods.tokenList) { _, _ in try await tokenList() }
        router.register(Methods.tokenRevoke) { request, _ in try await tokenRevoke(request) }
        router.register(Methods.nodeList) { _, _ in try await nodeList() }
        router.register(Methods.imageList) { request, _ in try await imageList(request) }
        router.register(Methods.balancerStats) { request, _ in try await balancerStats(request) }
        router.register(Methods.serviceAutoscale) { request, _ in try await serviceAutoscale(request) }
        router.register(Methods.nodeUpdate) { request, _ in try await nodeUpdate(request) }
        router.register(Methods.nodeRemove) { request, _ in try await nodeRemove(request) }
        router.register(Methods.snapshotSave) { (_: Flotilla_V1_SnapshotSaveRequest, writer: ResponseWriter<Flotilla_V1_SnapshotChunk>, _: ServerContext) in
            try await snapshotSave(writer)
        }
    }

    func status() -> Flotilla_V1_StatusResponse {
        var response = Flotilla_V1_StatusResponse()
        response.controllerID = credentials.identity.nodeID.rawValue
        response.version = FlotillaVersion.current
        let uptime = ContinuousClock.now - startedAt
        response.uptimeSeconds = Double(uptime.components.seconds) + Double(uptime.components.attoseconds) / 1e18
        response.protocolVersion = ProtocolVersion.current
        response.clusterID = credentials.clusterID
        response.listenAddress = listenAddress
        return response
    }

    // MARK: - Join tokens

    static let defaultTokenLifetimeSeconds: UInt64 = 24 * 3600
    static let maxTokenLifetimeSeconds: UInt64 = 365 * 24 * 3600

    func tokenCreate(_ request: Flotilla_V1_TokenCreateRequest) async throws -> Flotilla_V1_TokenCreateResponse {
        guard let role = NodeRole(rawValue: request.role), role == .agent || role == .controller else {
            throw RPCError(.invalidArgument, "--role must be agent or controller, not '\(request.role)'")
        }
        let ttl = request.ttlSeconds == 0 ? Self.defaultTokenLifetimeSeconds : request.ttlSeconds
        guard ttl <= Self.maxTokenLifetimeSeconds else {
            throw RPCError(.invalidArgument, "--ttl \(ttl)s is longer than the limit of one year; tokens are meant to be short-lived")
        }
        let token = try JoinToken.generate(role: role, caPinHex: try authority.current().pin)
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        let record = JoinTokenRecord(
            id: token.id, role: role, secretSHA256: token.secretSHA256, createdAtMs: now, expiresAtMs: now + ttl * 1000,
            maxUses: request.maxUses)
        switch try await raft.propose(ClusterCommands.tokenCreate(record)) {
        case .ok: break
        case .invalid(let why): throw RPCError(.invalidArgument, why)
        case .notFound, .casFailed: throw RPCError(.internalError, "the token was not stored; retry")
        }
        var response = Flotilla_V1_TokenCreateResponse()
        response.token = token.text
        response.info = Self.info(record)
        return response
    }

    func tokenList() async throws -> Flotilla_V1_TokenListResponse {
        try await raft.linearizable()
        var response = Flotilla_V1_TokenListResponse()
        response.tokens = raft.store.read { $0.tokens }.map(Self.info)
        return response
    }

    func tokenRevoke(_ request: Flotilla_V1_TokenRevokeRequest) async throws -> Flotilla_V1_TokenRevokeResponse {
        switch try await raft.propose(ClusterCommands.tokenRevoke(id: request.id)) {
        case .ok: return Flotilla_V1_TokenRevokeResponse()
        case .notFound: throw RPCError(.notFound, "no join token with id '\(request.id)' (flotilla token ls lists them)")
        case .invalid(let why): throw RPCError(.invalidArgument, why)
        case .casFailed: throw RPCError(.internalError, "unexpected compare-and-set result")
        }
    }

    static func info(_ record: JoinTokenRecord) -> Flotilla_V1_TokenInfo {
        var info = Flotilla_V1_TokenInfo()
        info.id = record.id
        info.role = record.role.rawValue
        info.createdAtMs = record.createdAtMs
        info.expiresAtMs = record.expiresAtMs
        info.used = record.used
        info.maxUses = record.maxUses
        info.revoked = record.revoked
        return info
    }

    // MARK: - Nodes

    func nodeInfo(_ node: NodeRecord) -> Flotilla_V1_NodeInfo {
        var info = Flotilla_V1_NodeInfo()
        info.id = node.id.rawValue
        info.name = node.name
        info.role = NodeRole.agent.rawValue
        info.address = node.address
        info.status = node.status.rawValue
        info.availability = node.availability.rawValue
        info.labels = Flotilla_V1_Label.list(node.labels)
        info.joinedAtMs = node.joinedAtMs
        info.statusChangedAtMs = node.statusChangedAtMs
        info.lastHeartbeatMs = monitor.lastHeartbeatMs(of: node.id) ?? 0
        info.agentVersion = node.agentVersion
        return info
    }

    func nodeList() async throws -> Flotilla_V1_NodeListResponse {
        try await raft.linearizable()
        var response = Flotilla_V1_NodeListResponse()
        response.nodes = raft.store.read { $0.nodes }.sorted { $0.name < $1.name }.map(nodeInfo)
        return response
    }

    /// The images every node (or one) reported to this leader: soft state, rebuilt by a new leader from the
    /// agents' next sessions.
    func imageList(_ request: Flotilla_V1_ImageListRequest) async throws -> Flotilla_V1_ImageListResponse {
        try await raft.linearizable()
        var response = Flotilla_V1_ImageListResponse()
        response.nodes = try nodesByName(request.node).map { node in
            var entry = Flotilla_V1_NodeImages()
            entry.nodeID = node.id.rawValue
            entry.nodeName = node.name
            if let images = monitor.images(of: node.id) {
                entry.reported = true
                entry.images = images
            }
            return entry
        }
        return response
    }

    /// Every node's (or one's) latest load-balancer report, its services filtered to one when asked: soft state,
    /// rebuilt by a new leader from the agents' next sessions.
    func balancerStats(_ request: Flotilla_V1_BalancerStatsRequest) async throws -> Flotilla_V1_BalancerStatsResponse {
        try await raft.linearizable()
        let nodes = try nodesByName(request.node)
        let serviceID = request.service.isEmpty ? nil : try ServiceAdmin(raft: raft).find(request.service).id
        var response = Flotilla_V1_BalancerStatsResponse()
        response.nodes = nodes.map { node in
            var entry = Flotilla_V1_NodeBalancerStats()
            entry.nodeID = node.id.rawValue
            entry.nodeName = node.name
            if let held = monitor.balancerReport(of: node.id) {
                entry.reported = true
                entry.connected = held.connected
                entry.ageMs = UInt64(max(0, held.age / .milliseconds(1)))
                entry.report = held.report
                if let serviceID { entry.report.services.removeAll { $0.serviceID != serviceID } }
            }
            return entry
        }
        return response
    }

    /// A service's autoscaling as the leader sees it now: its settings and last decisions (the record), and the
    /// soft state behind the next decision (what the reports measure, what the targets ask for).
    func serviceAutoscale(_ request: Flotilla_V1_ServiceRef) async throws -> Flotilla_V1_ServiceAutoscaleResponse {
        try await raft.linearizable()
        let service = try ServiceAdmin(raft: raft).find(request.service)
        guard service.spec.hasAutoscale else {
            throw RPCError(
                .failedPrecondition,
                "service \(service.spec.name) does not autoscale; give it settings with `flotilla service update \(service.spec.name) --autoscale max=N,target-rps=R`")
        }
        let tasks = raft.store.read { $0.tasks(ofService: service.id) }
        let measurement = monitor.load.measure(service, tasks: tasks, at: monitor.load.nowMillis)
        var response = Flotilla_V1_ServiceAutoscaleResponse()
        response.service = service
        response.service.spec.autoscale = ServiceSpecRules.normalized(service.spec.autoscale)
        response.replicas = measurement.replicas
        response.ready = measurement.ready
        response.measured = measurement.measured
        response.requestsPerSecond = measurement.requestsPerSecond
        response.activeConnections = measurement.activeConnections
        response.cpuMeasured = measurement.cpuMeasured
        response.cpuPercent = measurement.cpuPercent
        response.memoryBytes = measurement.memoryBytes
        response.nodesReporting = measurement.nodesReporting
        response.recommended = autoscale.recommendation(for: service.id) ?? 0
        response.windowMs = monitor.load.windowMillis
        return response
    }

    /// Every node sorted by name, or only the one `reference` names (id or name; NOT_FOUND when none).
    func nodesByName(_ reference: String) throws -> [NodeRecord] {
        reference.isEmpty ? raft.store.read { $0.nodes }.sorted { $0.name < $1.name } : [try findNode(reference)]
    }

    /// A node by id or, failing that, by name.
    func findNode(_ reference: String) throws -> NodeRecord {
        let found = raft.store.read { state in
            state.node(NodeID(reference)) ?? state.nodes.first { $0.name == reference }
        }
        guard let found else { throw RPCError(.notFound, "no node with id or name '\(reference)' (flotilla node ls lists them)") }
        return found
    }

    func nodeUpdate(_ request: Flotilla_V1_NodeUpdateRequest) async throws -> Flotilla_V1_NodeInfo {
        try await raft.linearizable()
        var node = try findNode(request.node)
        if !request.availability.isEmpty {
            guard let availability = NodeRecord.Availability(rawValue: request.availability) else {
                throw RPCError(.invalidArgument, "availability must be active, pause or drain, not '\(request.availability)'")
            }
            node.availability = availability
        }
        for label in request.addLabels {
            if let problem = NodeRecord.labelProblem(key: label.key, value: label.value) { throw RPCError(.invalidArgument, problem) }
            node.labels[label.key] = label.value
        }
        for key in request.removeLabels { node.labels[key] = nil }
        switch try await raft.propose(ClusterCommands.nodeUpsert(node)) {
        case .ok: return nodeInfo(try findNode(node.id.rawValue))
        case .notFound: throw RPCError(.notFound, "node \(node.name) was removed meanwhile")
        case .invalid(let why): throw RPCError(.invalidArgument, why)
        case .casFailed: throw RPCError(.internalError, "unexpected compare-and-set result")
        }
    }

    func nodeRemove(_ request: Flotilla_V1_NodeRemoveRequest) async throws -> Flotilla_V1_NodeRemoveResponse {
        try await raft.linearizable()
        let node = try findNode(request.node)
        if node.status == .ready && !request.force {
            throw RPCError(
                .failedPrecondition,
                "node \(node.name) is ready (its agent is running); stop the agent first, or pass --force to remove it anyway (its certificate is refused from then on)")
        }
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        _ = try await raft.propose(ClusterCommands.nodeRemove(id: node.id, nowMs: now))
        var response = Flotilla_V1_NodeRemoveResponse()
        response.id = node.id.rawValue
        return response
    }

    // MARK: - Variables

    func validate(key: String, value: [UInt8]? = nil) throws {
        do {
            try Variable.validate(key: key, value: value)
        } catch {
            throw RPCError(.invalidArgument, error.message)
        }
    }

    func writeOutcome(_ result: ApplyResult, key: String, cas: UInt64?) throws -> Flotilla_V1_VarWriteResponse {
        switch result {
        case .ok(let index):
            var response = Flotilla_V1_VarWriteResponse()
            response.index = index
            return response
        case .casFailed(let current):
            let expected = cas ?? 0
            let message = current == 0
                ? "compare-and-set failed: key '\(key)' does not exist (current index 0), not index \(expected)"
                : expected == 0
                    ? "compare-and-set failed: key '\(key)' already exists at index \(current); --cas 0 writes only if absent"
                    : "compare-and-set failed: key '\(key)' is at index \(current), not \(expected)"
            throw RPCError(.failedPrecondition, message)
        case .notFound:
            throw RPCError(.notFound, "no variable named '\(key)'")
        case .invalid(let message):
            throw RPCError(.invalidArgument, message)
        }
    }

    func varPut(_ request: Flotilla_V1_VarPutRequest) async throws -> Flotilla_V1_VarWriteResponse {
        let value = Array(request.value)
        try validate(key: request.key, value: value)
        let cas = request.hasCasIndex ? request.casIndex : nil
        let result = try await raft.propose(ClusterCommands.varPut(key: request.key, value: value, cas: cas))
        return try writeOutcome(result, key: request.key, cas: cas)
    }

    func varDelete(_ request: Flotilla_V1_VarDeleteRequest) async throws -> Flotilla_V1_VarWriteResponse {
        try validate(key: request.key)
        let cas = request.hasCasIndex ? request.casIndex : nil
        let result = try await raft.propose(ClusterCommands.varDelete(key: request.key, cas: cas))
        return try writeOutcome(result, key: request.key, cas: cas)
    }

    static func record(_ variable: Variable) -> Flotilla_V1_VariableRecord {
        var record = Flotilla_V1_VariableRecord()
        record.key = variable.key
        record.value = Data(variable.value)
        record.createIndex = variable.createIndex
        record.modifyIndex = variable.modifyIndex
        return record
    }

    func varGet(_ request: Flotilla_V1_VarGetRequest) async throws -> Flotilla_V1_VarGetResponse {
        if !request.stale { try await raft.linearizable() }
        guard let variable = raft.store.read({ $0.variable(request.key) }) else {
            throw RPCError(.notFound, "no variable named '\(request.key)'")
        }
        var response = Flotilla_V1_VarGetResponse()
        response.variable = Self.record(variable)
        return response
    }

    func varList(_ request: Flotilla_V1_VarListRequest) async throws -> Flotilla_V1_VarListResponse {
        if !request.stale { try await raft.linearizable() }
        var response = Flotilla_V1_VarListResponse()
        response.variables = raft.store.read { $0.variables(prefix: request.prefix) }.map(Self.record)
        return response
    }

    // MARK: - Backups

    /// A consistent backup: after a linearizable read on the leader, the store's snapshot and the CA, in a
    /// Raft snapshot file's envelope (zlib, CRC-32), streamed in 1 MiB chunks.
    func snapshotSave(_ writer: ResponseWriter<Flotilla_V1_SnapshotChunk>) async throws {
        try await raft.linearizable()
        let status = await raft.driver.status
        let (storeSnapshot, applied) = raft.store.read { ($0.snapshot(), $0.appliedIndex) }
        var backup = Flotilla_V1_BackupRecord()
        backup.caPem = try authority.current().pemBundle()
        backup.storeSnapshot = Data(storeSnapshot)
        backup.clusterID = credentials.clusterID
        let file = try SnapshotStore.encode(Snapshot(
            metadata: SnapshotMetadata(index: LogIndex(applied), term: status.term, configuration: status.configuration),
            data: try backup.serializedBytes()))
        var offset = 0
        while offset < file.count {
            let end = min(offset + (1 << 20), file.count)
            var chunk = Flotilla_V1_SnapshotChunk()
            chunk.data = Data(file[offset..<end])
            try await writer.write(chunk)
            offset = end
        }
    }

    // MARK: - Controllers

    func controllerList() async -> Flotilla_V1_ControllerListResponse {
        let status = await raft.driver.status
        let records = raft.store.read { $0.controllers }
        var response = Flotilla_V1_ControllerListResponse()
        response.commitIndex = status.commitIndex.rawValue
        response.appliedIndex = status.appliedIndex.rawValue
        response.answeredBy = status.id.rawValue
        for member in status.configuration.members.sorted() {
            var info = Flotilla_V1_ControllerInfo()
            info.id = member.rawValue
            info.address = records.first { $0.id == member }?.address ?? ""
            info.membership = status.configuration.voters.contains(member) ? "voter" : "learner"
            info.leader = status.leader == member
            info.term = status.term.rawValue
            if let match = status.matchIndexes[member] {
                info.matchIndex = match.rawValue
                info.lag = status.lastIndex.rawValue - min(match.rawValue, status.lastIndex.rawValue)
            }
            response.controllers.append(info)
        }
        return response
    }

    func controllerRemove(_ request: Flotilla_V1_ControllerRemoveRequest) async throws -> Flotilla_V1_ControllerRemoveResponse {
        let id = NodeID(request.id)
        let status = await raft.driver.status
        guard status.configuration.members.contains(id) else {
            throw RPCError(.notFound, "no controller \(request.id) in the cluster (see flotilla controller ls)")
        }
        do {
            try await raft.driver.proposeConfigurationChange(.remove(id))
        } catch {
            throw raft.translate(error)
        }
        // Its certificate is refused from now on, and the address-book entry goes too; if this controller was
        // the one removed, the next leader does both (MembershipService.maintain).
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        if (try? await raft.propose(ClusterCommands.nodeRemove(id: id, nowMs: now))) != nil {
            _ = try? await raft.propose(ClusterCommands.controllerRemove(id: id))
        }
        return Flotilla_V1_ControllerRemoveResponse()
    }

    func transferLeadership(_ request: Flotilla_V1_TransferLeadershipRequest) async throws -> Flotilla_V1_TransferLeadershipResponse {
        let status = await raft.driver.status
        guard status.role == .leader else {
            throw raft.translate(RaftDriverError.notLeader(leader: status.leader))
        }
        let target: NodeID
        if request.id.isEmpty {
            let candidates = status.configuration.voters.filter { $0 != raft.id }
            guard let best = candidates.max(by: { (status.matchIndexes[$0] ?? 0) < (status.matchIndexes[$1] ?? 0) }) else {
                throw RPCError(.failedPrecondition, "there is no other voter to hand leadership to")
            }
            target = best
        } else {
            target = NodeID(request.id)
        }
        do {
            try await raft.driver.transferLeadership(to: target)
        } catch {
            throw raft.translate(error)
        }
        // Wait (bounded) until the target leads.
        let deadline = ContinuousClock.now + .seconds(5)
        while ContinuousClock.now < deadline {
            let now = await raft.driver.status
            if now.leader == target {
                var response = Flotilla_V1_TransferLeadershipResponse()
                response.leader = target.rawValue
                return response
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw RPCError(.deadlineExceeded, "\(target) did not take over within 5 s; leadership stays where it is")
    }
}
