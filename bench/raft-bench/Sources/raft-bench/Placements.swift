// `raft-bench placements` (issue 5, benchmark b): placements committed end to end on a running cluster.
//
//   raft-bench placements --addresses A,B,C --credentials admin.creds [--agents 1000] [--replicas 10000]
//                         [--trials 3] [--timeout 120] [--settle 5] [--json FILE]
//
// Joins `agents` simulated agents with a token (real joins: key, CSR, certificate), each with its own session
// (its own mutual-TLS connection to the leader) that heartbeats at the period the leader sets and acknowledges
// every assignment at once: a task assigned to run is reported `running` in the next heartbeat, one to stop is
// reported `shutdown`. Nothing is started on the host. Then, per trial, creates a service with `replicas`
// tasks and measures from the create call to:
//   - dispatched: every task committed with a node (scheduler + orchestrator + Raft) and received by its agent;
//   - acknowledged: the leader reports every task running (the agents' reports committed through Raft).
// Placements/s = replicas / dispatched seconds. Then removes the service, waits for the agents to be idle and
// `settle` seconds more (the store deletes the stopped tasks).
// Every wait is bounded by --timeout.
import Agent
import AdminClient
import ClusterModel
import Foundation
import Logging
import Messages
import PKI
import Synchronization
import Transport

/// What all simulated agents hold right now: tasks assigned to run, per service.
final class Fleet: Sendable {
    private let running = Mutex<[String: Int]>([:])

    func changed(service: String, by delta: Int) {
        running.withLock { $0[service, default: 0] += delta }
    }

    func count(_ service: String) -> Int { running.withLock { $0[service] ?? 0 } }
    var total: Int { running.withLock { $0.values.reduce(0, +) } }
}

/// An agent that runs nothing and acknowledges everything: the leader's view of a fast node.
actor SimulatedWorker: AssignmentReceiver {
    private let fleet: Fleet
    private var sequence = AssignmentSequence()
    private var assigned: [String: String] = [:]  // task -> service, desired running
    private var statuses: [Flotilla_V1_TaskStatus] = []

    init(fleet: Fleet) { self.fleet = fleet }

    func apply(_ update: Flotilla_V1_SessionUpdate) {
        switch sequence.accept(update) {
        case .complete(let assignments):
            let wanted = Set(assignments.filter { $0.desiredState == .running }.map(\.taskID))
            for id in assigned.keys where !wanted.contains(id) { stop(id) }
            for assignment in assignments { take(assignment) }
        case .change(let upserts, let removed):
            for id in removed { stop(id) }
            for assignment in upserts { take(assignment) }
        case .ignore:
            break
        }
    }

    private func take(_ assignment: Flotilla_V1_TaskAssignment) {
        if assignment.desiredState == .running {
            guard assigned[assignment.taskID] == nil else { return }
            assigned[assignment.taskID] = assignment.serviceID
            fleet.changed(service: assignment.serviceID, by: 1)
            report(assignment.taskID, .running)
        } else {
            stop(assignment.taskID)
        }
    }

    private func stop(_ id: String) {
        guard let service = assigned.removeValue(forKey: id) else { return }
        fleet.changed(service: service, by: -1)
        report(id, .shutdown)
    }

    private func report(_ id: String, _ state: Flotilla_V1_TaskState) {
        var status = Flotilla_V1_TaskStatus()
        status.taskID = id
        status.state = state
        status.atMs = UInt64(Date().timeIntervalSince1970 * 1000)
        statuses.append(status)
    }

    func takeStatuses() -> [Flotilla_V1_TaskStatus] {
        defer { statuses = [] }
        return statuses
    }

    func requeue(_ unsent: [Flotilla_V1_TaskStatus]) { statuses.insert(contentsOf: unsent, at: 0) }

    func position() -> AssignmentSequence.Position { sequence.position }
}

func placements(_ arguments: Arguments) async throws -> [String: Any] {
    let addresses = try arguments.string("addresses").split(separator: ",").map(String.init)
    let credentials = try Credentials.load(from: try arguments.string("credentials"))
    let agentCount = try arguments.int("agents", 1000)
    let replicas = try arguments.int("replicas", 10_000)
    let trials = try arguments.int("trials", 3)
    let timeout = try arguments.double("timeout", 120)
    let settle = try arguments.double("settle", 5)
    let admin = try await AdminClient.connect(to: addresses, credentials: credentials)
    let fleet = Fleet()
    var logger = Logger(label: "sim-agent")
    logger.logLevel = .warning

    // Join the agents, 16 at a time (each join is a CSR the leader signs and a NodeJoin it commits).
    let token = try JoinToken(parsing: try await admin.tokenCreate(role: "agent", maxUses: UInt32(agentCount)).token)
    let joinStarted = now()
    let identities = try await withThrowingTaskGroup(of: Credentials.self) { group in
        var joined: [Credentials] = []
        for index in 0..<agentCount {
            if index >= 16, let credentials = try await group.next() { joined.append(credentials) }
            group.addTask {
                try await NodeJoiner.join(
                    controllers: addresses, token: token,
                    request: .init(role: .agent, name: "sim-\(index)", advertiseAddress: "127.0.0.1", version: "bench"))
            }
        }
        for try await credentials in group { joined.append(credentials) }
        return joined
    }
    log("placements: \(identities.count) agents joined in \(round2(now() - joinStarted)) s")

    return try await withThrowingTaskGroup(of: Void.self) { sessions in
        for credentials in identities {
            let session = AgentSession(
                identity: AgentIdentity(credentials), controllers: addresses, directory: nil,
                worker: SimulatedWorker(fleet: fleet), logger: logger)
            sessions.addTask { try await session.run() }
        }
        defer { sessions.cancelAll() }

        let readyStarted = now()
        while now() - readyStarted < timeout {
            let ready = (try? await admin.nodeList())?.filter { $0.status == "ready" }.count ?? 0
            if ready == agentCount { break }
            await sleep(seconds: 0.25)
        }
        let ready = (try? await admin.nodeList())?.filter { $0.status == "ready" }.count ?? 0
        guard ready == agentCount else { throw BenchError("only \(ready) of \(agentCount) agents became ready") }
        log("placements: \(agentCount) agents ready after \(round2(now() - readyStarted)) s")

        var results: [[String: Any]] = []
        for trial in 1...trials {
            var spec = Flotilla_V1_ServiceSpec()
            spec.name = "bench-\(trial)"
            spec.driver = "process"
            spec.command = "sleep infinity"
            spec.replicas = UInt32(replicas)
            let started = now()
            let service = try await admin.serviceCreate(spec, timeout: .seconds(30))
            var dispatched: Double?
            var acknowledged: Double?
            while now() - started < timeout, acknowledged == nil {
                if dispatched == nil, fleet.count(service.id) >= replicas { dispatched = now() - started }
                if dispatched != nil,
                   let summary = try? await admin.serviceList().first(where: { $0.service.id == service.id }),
                   summary.running >= replicas {
                    acknowledged = now() - started
                }
                await sleep(seconds: 0.02)
            }
            guard let dispatched, let acknowledged else {
                throw BenchError("trial \(trial): \(fleet.count(service.id)) of \(replicas) tasks reached agents within \(timeout) s")
            }
            let rate = Double(replicas) / dispatched
            log("placements: trial \(trial): \(replicas) tasks on \(agentCount) agents dispatched in \(round3(dispatched)) s "
                + "(\(Int(rate)) placements/s), all running (acknowledged) after \(round3(acknowledged)) s")
            results.append([
                "trial": trial, "replicas": replicas, "agents": agentCount, "dispatched_s": round3(dispatched),
                "acknowledged_s": round3(acknowledged), "placements_per_s": rate.rounded(),
                "acknowledged_per_s": (Double(replicas) / acknowledged).rounded(),
            ])

            _ = try await admin.serviceRemove(spec.name, timeout: .seconds(30))
            let removeStarted = now()
            while now() - removeStarted < timeout {
                let listed = (try? await admin.serviceList())?.contains { $0.service.id == service.id } ?? true
                if fleet.total == 0 && !listed { break }
                await sleep(seconds: 0.1)
            }
            log("placements: trial \(trial): removed; agents idle after \(round2(now() - removeStarted)) s")
            // The removed tasks are deleted from the store after the agents report them stopped: let that
            // finish, so each trial starts from the same quiet cluster.
            await sleep(seconds: settle)
        }
        await admin.close()
        let rates = results.compactMap { $0["placements_per_s"] as? Double }.sorted()
        return [
            "agents": agentCount, "replicas": replicas, "trials": results,
            "median_placements_per_s": rates.isEmpty ? 0 : rates[rates.count / 2],
        ]
    }
}
