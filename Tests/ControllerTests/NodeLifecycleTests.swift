import AdminClient
import Foundation
import PKI
import TestSupport
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Three controller processes and two agent processes on loopback, joined with tokens as a user would:
/// an agent that dies is `down` after three missed heartbeats, `ready` again as soon as it is back, and a
/// leader failover marks no healthy node down.
@Suite("Node lifecycle with agent processes", .serialized)
struct NodeLifecycleTests {
    static func agent(_ dataDirectory: String, extra: [String]) throws -> ChildProcess {
        try ChildProcess(
            try FlotillaBinaries.path("flotilla-agent"), ["--data-dir", dataDirectory, "--run-dir", dataDirectory + "/run", "--log-level", "warning"] + extra)
    }

    static func nowMs() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }

    @Test("a killed agent is down within 3.5 s, ready within 2 s of returning; a leader failover marks no node down")
    func agentDeathAndLeaderFailover() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-nodes-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let ports = try (0..<3).map { _ in try ControllerKillTests.freePort() }
        let addresses = ports.map { "127.0.0.1:\($0)" }
        var controllers: [ChildProcess] = []
        var agents: [ChildProcess] = []
        func stopAll(_ signal: Int32) async {
            for process in agents + controllers { await process.stop(signal: signal); process.removeOutput() }
        }
        do {
            controllers.append(try ControllerKillTests.controller(root + "/c0", port: ports[0], extra: ["--init"]))
            let credentialsPath = root + "/c0/admin.creds"
            #expect(try await eventually(timeout: .seconds(120)) { FileManager.default.fileExists(atPath: credentialsPath) })
            let admin = try await ControllerKillTests.adminWhenServing(addresses, credentials: try Credentials.load(from: credentialsPath))
            let controllerToken = try await admin.tokenCreate(role: "controller", maxUses: 2).token
            for index in 1...2 {
                controllers.append(try ControllerKillTests.controller(
                    root + "/c\(index)", port: ports[index], extra: ["--join", addresses[0], "--token", controllerToken]))
            }
            #expect(try await eventually(timeout: .seconds(120)) {
                (try? await admin.controllerList())?.controllers.filter { $0.membership == "voter" }.count == 3
            })
            let agentToken = try await admin.tokenCreate(role: "agent", maxUses: 2).token
            for name in ["n1", "n2"] {
                agents.append(try Self.agent(root + "/" + name, extra: [
                    "--controller", addresses.joined(separator: ","), "--token", agentToken, "--name", name, "--labels", "zone=a",
                ]))
            }
            #expect(try await eventually(timeout: .seconds(60)) {
                let nodes = (try? await admin.nodeList()) ?? []
                return nodes.count == 2 && nodes.allSatisfy { $0.status == "ready" }
            })

            // SIGKILL n1's agent: the leader commits `down` three heartbeat periods after its last heartbeat.
            let killedAt = Self.nowMs()
            await agents[0].stop(signal: SIGKILL)
            #expect(try await eventually(timeout: .seconds(15)) { (try? await admin.nodeList())?.first { $0.name == "n1" }?.status == "down" })
            let down = try #require(try await admin.nodeList().first { $0.name == "n1" })
            let detection = Double(down.statusChangedAtMs - killedAt) / 1000
            print("agent SIGKILL -> node down after \(detection) s")
            #expect(detection <= 3.5, "down after \(detection) s")
            #expect(try await admin.nodeList().first { $0.name == "n2" }?.status == "ready")

            // The agent comes back on its data directory, without a token: ready again within 2 s.
            agents[0].removeOutput()
            let restartedAt = Self.nowMs()
            agents[0] = try Self.agent(root + "/n1", extra: [])
            #expect(try await eventually(timeout: .seconds(15)) { (try? await admin.nodeList())?.first { $0.name == "n1" }?.status == "ready" })
            let ready = try #require(try await admin.nodeList().first { $0.name == "n1" })
            let recovery = Double(ready.statusChangedAtMs - restartedAt) / 1000
            print("agent restart -> node ready after \(recovery) s")
            #expect(recovery <= 2.0, "ready after \(recovery) s")

            // SIGKILL the leader: the new leader gives the nodes a grace period; both stay ready throughout.
            let leaderAddress = try #require(try await admin.controllerList().controllers.first { $0.leader }?.address)
            let position = try #require(addresses.firstIndex(of: leaderAddress))
            let failoverAt = Self.nowMs()
            await controllers[position].stop(signal: SIGKILL)
            var sawDown = false
            let watchUntil = ContinuousClock.now + .seconds(8)
            while ContinuousClock.now < watchUntil {
                if let nodes = try? await admin.nodeList(timeout: .seconds(2)) {
                    sawDown = sawDown || nodes.contains { $0.status != "ready" || $0.statusChangedAtMs > failoverAt }
                }
                try await Task.sleep(for: .milliseconds(200))
            }
            #expect(!sawDown, "a healthy node was marked down across the leader failover")
            // The agents followed the new leader: it hears their heartbeats.
            #expect(try await eventually(timeout: .seconds(10)) {
                ((try? await admin.nodeList()) ?? []).allSatisfy { $0.lastHeartbeatMs > failoverAt }
            })
            await admin.close()
        } catch {
            await stopAll(SIGKILL)
            throw error
        }
        await stopAll(SIGTERM)
    }
}
