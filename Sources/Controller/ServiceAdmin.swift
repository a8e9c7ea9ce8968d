import ClusterModel
import ClusterStore
import Foundation
import Messages
import RaftRuntime
import Transport
import Wire

/// The admin API for services: specs in (validated, normalized, versioned), records and tasks out.
struct ServiceAdmin: Sendable {
    let raft: ControllerRaft

    func register(into router: inout RPCRouter) {
        router.register(Methods.serviceCreate) { request, _ in try await create(request.spec) }
        router.register(Methods.serviceUpdate) { request, _ in try await update(request.spec, expectedVersion: request.expectedVersion) }
        router.register(Methods.serviceRollback) { request, _ in try await rollback(request.service) }
        router.register(Methods.serviceRemove) { request, _ in try await remove(request.service) }
        router.register(Methods.serviceList) { _, _ in try await list() }
        router.register(Methods.serviceInspect) { request, _ in try await inspect(request.service) }
    }

    static var nowMs: UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    /// Refuses a spec with every problem named, field by field.
    func validated(_ spec: Flotilla_V1_ServiceSpec) throws -> Flotilla_V1_ServiceSpec {
        let problems = ServiceSpecRules.problems(in: spec)
        guard problems.isEmpty else {
            throw RPCError(.invalidArgument, "the service spec is invalid: " + problems.map(\.description).joined(separator: "; "))
        }
        return ServiceSpecRules.normalized(spec)
    }

    func find(_ reference: String) throws -> Flotilla_V1_ServiceRecord {
        guard let service = raft.store.read({ $0.service(named: reference) ?? $0.service(reference) }) else {
            throw RPCError(.notFound, "no service named '\(reference)' (flotilla service ls lists them)")
        }
        return service
    }

    func outcome(_ result: ApplyResult, service id: String) throws -> Flotilla_V1_ServiceRecord {
        switch result {
        case .ok:
            guard let service = raft.store.read({ $0.service(id) }) else { throw RPCError(.notFound, "the service was removed meanwhile") }
            return service
        case .casFailed(let current):
            throw RPCError(.failedPrecondition, "the service is at version \(current) now; read it again and retry")
        case .notFound:
            throw RPCError(.notFound, "the service was removed meanwhile")
        case .invalid(let why):
            throw RPCError(.invalidArgument, why)
        }
    }

    func create(_ spec: Flotilla_V1_ServiceSpec) async throws -> Flotilla_V1_ServiceRecord {
        let spec = try validated(spec)
        var record = Flotilla_V1_ServiceRecord()
        var generator = SystemRandomNumberGenerator()
        record.id = "s-" + NodeID.random(using: &generator).rawValue
        record.spec = spec
        record.version = 1
        record.createdAtMs = Self.nowMs
        record.updatedAtMs = record.createdAtMs
        return try outcome(try await raft.propose(ClusterCommands.serviceCreate(record)), service: record.id)
    }

    func update(_ spec: Flotilla_V1_ServiceSpec, expectedVersion: UInt64) async throws -> Flotilla_V1_ServiceRecord {
        let spec = try validated(spec)
        try await raft.linearizable()
        let service = try find(spec.name)
        return try outcome(
            try await raft.propose(ClusterCommands.serviceUpdate(id: service.id, spec: spec, expectedVersion: expectedVersion, nowMs: Self.nowMs)),
            service: service.id)
    }

    func rollback(_ reference: String) async throws -> Flotilla_V1_ServiceRecord {
        try await raft.linearizable()
        let service = try find(reference)
        guard service.hasPreviousSpec else {
            throw RPCError(.failedPrecondition, "service \(service.spec.name) has no previous spec to roll back to")
        }
        return try outcome(
            try await raft.propose(ClusterCommands.serviceUpdate(
                id: service.id, spec: service.previousSpec, expectedVersion: service.version, nowMs: Self.nowMs, rollback: true)),
            service: service.id)
    }

    func remove(_ reference: String) async throws -> Flotilla_V1_ServiceRecord {
        try await raft.linearizable()
        let service = try find(reference)
        switch try await raft.propose(ClusterCommands.serviceRemove(id: service.id)) {
        case .ok, .notFound: return service
        case .invalid(let why): throw RPCError(.invalidArgument, why)
        case .casFailed: throw RPCError(.internalError, "unexpected compare-and-set result")
        }
    }

    func list() async throws -> Flotilla_V1_ServiceListResponse {
        try await raft.linearizable()
        return raft.store.read { state in
            var response = Flotilla_V1_ServiceListResponse()
            response.services = state.services.map { service in
                let live = state.tasks(ofService: service.id).filter { $0.desiredState == .running }
                var summary = Flotilla_V1_ServiceSummary()
                summary.service = service
                summary.desired = UInt32(live.count)
                summary.running = UInt32(live.filter { $0.state == .running }.count)
                return summary
            }
            return response
        }
    }

    func inspect(_ reference: String) async throws -> Flotilla_V1_ServiceInspectResponse {
        try await raft.linearizable()
        let service = try find(reference)
        return raft.store.read { state in
            var response = Flotilla_V1_ServiceInspectResponse()
            response.service = service
            let tasks = state.tasks(ofService: service.id)
            response.tasks = tasks.filter { $0.desiredState == .running }
                + tasks.filter { $0.desiredState != .running }.sorted { $0.stateChangedAtMs > $1.stateChangedAtMs }
            for task in tasks where !task.nodeID.isEmpty {
                response.nodeNames[task.nodeID] = state.node(NodeID(task.nodeID))?.name ?? task.nodeID
            }
            return response
        }
    }
}
