import AdminClient
import Agent
import ClusterModel
import Controller
import Foundation
import Messages
import PKI
import Synchronization
import TestSupport
import Testing

/// A service's whole life on three controllers and three agents in one process, with real processes (the
/// process driver runs `sleep`): scaling, drain, a rolling update, a manual rollback, a failing version rolled
/// back automatically, and a leader failover in the middle of an update, which the new leader finishes.
@Suite("Service lifecycle on three controllers", .serialized)
struct ServiceLifecycleTests {
    /// The service's tasks that should run, as the leader reports them.
    static func live(_ admin: AdminClient, _ name: String) async -> [Flotilla_V1_TaskRecord] {
        ((try? await admin.serviceInspect(name).tasks) ?? []).filter { $0.desiredState == .running }
    }

    /// All `count` live tasks are running, and the agents run exactly that many processes.
    static func settled(_ admin: AdminClient, _ name: String, count: Int, agents: InProcessAgents) async -> Bool {
        let tasks = await live(admin, name)
        let processes = await agents.runningCount()
        return tasks.count == count && tasks.allSatisfy { $0.state == .running } && processes == count
    }

    static func updateState(_ admin: AdminClient, _ name: String) async -> String {
        (try? await admin.serviceInspect(name).service.updateStatus.state) ?? ""
    }

    @Test("scale up and down, drain, rolling update, rollback (manual and automatic), and a leader failover mid-update")
    func lifecycle() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-life-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let started = try await ControllerClusterTests.startThree(root)
        var controllers = started.0
        let credentials = started.1
        let addresses = controllers.map(\.server.localAddress)
        let admin: AdminClient
        let agents: InProcessAgents
        do {
            admin = try await AdminClient.connect(to: addresses, credentials: credentials)
            agents = try await InProcessAgents.start(["n1", "n2", "n3"], controllers: addresses, admin: admin)
        } catch {
            for running in controllers { await ControllerClusterTests.stop(running) }
            throw error
        }
        do {
            #expect(try await eventually(timeout: .seconds(15)) { (try? await admin.nodeList())?.filter { $0.status == "ready" }.count == 3 })

            var spec = Flotilla_V1_ServiceSpec.process("app", command: "exec sleep 300", replicas: 3, monitorMs: 300)
            _ = try await admin.serviceCreate(spec)
            #expect(try await eventually(timeout: .seconds(20)) { await Self.settled(admin, "app", count: 3, agents: agents) })
            #expect(Set(await Self.live(admin, "app").map(\.nodeID)).count == 3, "spread: one task per node")

            // Scale up: two per node. Scale down: the extra processes stop.
            spec = try await admin.serviceInspect("app").service.spec
            spec.replicas = 6
            _ = try await admin.serviceUpdate(spec)
            #expect(try await eventually(timeout: .seconds(20)) { await Self.settled(admin, "app", count: 6, agents: agents) })
            let perNode = Dictionary(grouping: await Self.live(admin, "app"), by: \.nodeID).mapValues(\.count)
            #expect(perNode.values.sorted() == [2, 2, 2], "spread within one task per node: \(perNode)")
            spec.replicas = 2
            _ = try await admin.serviceUpdate(spec)
            #expect(try await eventually(timeout: .seconds(20)) { await Self.settled(admin, "app", count: 2, agents: agents) })

            // Drain the node with a task: its tasks move away and its worker runs nothing; activate it again.
            let busy = try #require(await Self.live(admin, "app").first?.nodeID)
            let busyIndex = try #require(try await admin.nodeList().first { $0.id == busy }.flatMap { agents.names.firstIndex(of: $0.name) })
            _ = try await admin.nodeUpdate(busy, availability: "drain")
            let drained = agents.workers[busyIndex]
            #expect(try await eventually(timeout: .seconds(20)) {
                let settled = await Self.settled(admin, "app", count: 2, agents: agents)
                let elsewhere = await Self.live(admin, "app").allSatisfy { $0.nodeID != busy }
                let idle = await drained.runningTaskIDs.isEmpty
                return settled && elsewhere && idle
            })
            _ = try await admin.nodeUpdate(busy, availability: "active")

            // A rolling update (start-first) replaces both tasks with the new command.
            spec = try await admin.serviceInspect("app").service.spec
            spec.command = "exec sleep 301"
            spec.updateConfig.order = "start-first"
            let v1Digest = try #require(await Self.live(admin, "app").first?.specDigest)
            _ = try await admin.serviceUpdate(spec)
            #expect(try await eventually(timeout: .seconds(30)) {
                let tasks = await Self.live(admin, "app")
                let state = await Self.updateState(admin, "app")
                let settled = await Self.settled(admin, "app", count: 2, agents: agents)
                return state == "completed" && tasks.allSatisfy { $0.specDigest != v1Digest } && settled
            })

            // `service rollback` goes back to the previous spec, as an update of its own that ends rolled back.
            let rolledBack = try await admin.serviceRollback("app")
            #expect(rolledBack.spec.command == "exec sleep 300")
            #expect(try await eventually(timeout: .seconds(30)) {
                let tasks = await Self.live(admin, "app")
                let state = await Self.updateState(admin, "app")
                let settled = await Self.settled(admin, "app", count: 2, agents: agents)
                return state == "rolled-back" && tasks.allSatisfy { $0.specDigest == v1Digest } && settled
            })

            // A version whose tasks die at once is rolled back automatically: the failure action says so.
            spec = try await admin.serviceInspect("app").service.spec
            spec.command = "exit 3"
            spec.updateConfig.order = "stop-first"
            spec.updateConfig.failureAction = "rollback"
            spec.updateConfig.monitorMs = 2_000
            _ = try await admin.serviceUpdate(spec)
            #expect(try await eventually(timeout: .seconds(30)) {
                let state = await Self.updateState(admin, "app")
                let settled = await Self.settled(admin, "app", count: 2, agents: agents)
                return state == "rolled-back" && settled
            })
            let afterFailure = try await admin.serviceInspect("app")
            #expect(afterFailure.service.spec.command == "exec sleep 300")
            #expect(afterFailure.service.updateStatus.message.contains("updated tasks failed"), "says why: \(afterFailure.service.updateStatus.message)")

            // A slow update (one task at a time, a pause between) loses its leader halfway; the new leader
            // finishes it, never with more than one task out.
            spec = afterFailure.service.spec
            spec.replicas = 4
            _ = try await admin.serviceUpdate(spec)
            #expect(try await eventually(timeout: .seconds(20)) { await Self.settled(admin, "app", count: 4, agents: agents) })
            let v2Digest = try #require(await Self.live(admin, "app").first?.specDigest)
            spec = try await admin.serviceInspect("app").service.spec
            spec.command = "exec sleep 302"
            spec.updateConfig.parallelism = 1
            spec.updateConfig.delayMs = 700
            spec.updateConfig.monitorMs = 300
            spec.updateConfig.failureAction = "pause"
            _ = try await admin.serviceUpdate(spec)
            let fewestRunning = Lowest(4)
            #expect(try await eventually(timeout: .seconds(20), interval: .milliseconds(50)) {
                let tasks = await Self.live(admin, "app")
                let updated = tasks.filter { $0.specDigest != v2Digest && $0.state == .running }.count
                return updated >= 1 && updated < 4
            })
            let oldLeader = try #require(await ControllerClusterTests.leader(controllers))
            await ControllerClusterTests.stop(oldLeader)
            controllers.removeAll { $0.server.localAddress == oldLeader.server.localAddress }
            let survivors = controllers
            #expect(try await eventually(timeout: .seconds(10)) { await ControllerClusterTests.leader(survivors) != nil })
            let finished = try await eventually(timeout: .seconds(40), interval: .milliseconds(50)) {
                let tasks = await Self.live(admin, "app")
                if tasks.count == 4 { fewestRunning.observe(tasks.filter { $0.state == .running }.count) }
                let state = await Self.updateState(admin, "app")
                return state == "completed" && tasks.count == 4 && tasks.allSatisfy { $0.specDigest != v2Digest && $0.state == .running }
            }
            #expect(finished, "the new leader finishes the update")
            #expect(fewestRunning.value >= 3, "never more than the parallelism (1) out at once; saw \(fewestRunning.value) running")
            #expect(try await eventually(timeout: .seconds(10)) { await agents.runningCount() == 4 })
            // The agents found the new leader within its grace: no node was marked down, no task orphaned.
            #expect(try await admin.serviceInspect("app").tasks.allSatisfy { $0.state != .orphaned })

            _ = try await admin.serviceRemove("app")
            #expect(try await eventually(timeout: .seconds(20)) { await agents.runningCount() == 0 })
        } catch {
            await admin.close()
            await agents.stop()
            for running in controllers { await ControllerClusterTests.stop(running) }
            throw error
        }
        await admin.close()
        await agents.stop()
        for running in controllers { await ControllerClusterTests.stop(running) }
    }
}

/// The lowest value observed, from concurrently-running checks.
final class Lowest: Sendable {
    private let lowest: Mutex<Int>
    init(_ start: Int) { lowest = Mutex(start) }
    func observe(_ value: Int) { lowest.withLock { $0 = min($0, value) } }
    var value: Int { lowest.withLock { $0 } }
}
