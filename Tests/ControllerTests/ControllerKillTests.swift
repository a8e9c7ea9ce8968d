import AdminClient
import ContainerRuntime
import Foundation
import PKI
import TestSupport
import Testing
import Wire

#if canImport(Glibc)
import Glibc
#endif

/// Three controller processes on loopback; a writer keeps writing while the leader is SIGKILLed and
/// restarted. Every write the cluster acknowledged must be present afterwards, on every member.
@Suite("Controllers as processes under SIGKILL", .serialized)
struct ControllerKillTests {
    /// A free TCP port on 127.0.0.1 (bound, read, released).
    static func freePort() throws -> Int {
        guard let port = ProcessDriver.freePort() else { throw ChildProcessError("no free loopback port") }
        return port
    }

    /// An admin client once the founder answers: `--init` writes admin.creds before the server listens, and a
    /// loaded machine can leave a gap between the two.
    static func adminWhenServing(_ addresses: [String], credentials: Credentials) async throws -> AdminClient {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                let client = try await AdminClient.connect(to: addresses, credentials: credentials)
                _ = try await client.status()
                return client
            } catch where ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    static func controller(_ dataDirectory: String, port: Int, extra: [String]) throws -> ChildProcess {
        try ChildProcess(
            try FlotillaBinaries.path("flotilla-controller"),
            ["--data-dir", dataDirectory, "--listen", "127.0.0.1:\(port)", "--log-level", "warning"] + extra)
    }

    @Test("every acknowledged var put survives SIGKILL and restart of the leader, on every member")
    func leaderKilledUnderWrites() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-kill-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let ports = try (0..<3).map { _ in try Self.freePort() }
        let addresses = ports.map { "127.0.0.1:\($0)" }
        let directories = ["a", "b", "c"].map { root + "/" + $0 }
        var processes: [ChildProcess] = []
        do {
            processes.append(try Self.controller(directories[0], port: ports[0], extra: ["--init"]))
            let credentialsPath = directories[0] + "/admin.creds"
            #expect(try await eventually(timeout: .seconds(120)) { FileManager.default.fileExists(atPath: credentialsPath) })
            let admin = try Credentials.load(from: credentialsPath)
            let client = try await Self.adminWhenServing(addresses, credentials: admin)
            let token = try await client.tokenCreate(role: "controller", maxUses: 2).token
            for index in 1...2 {
                processes.append(try Self.controller(
                    directories[index], port: ports[index], extra: ["--join", addresses[0], "--token", token]))
            }
            let formed = try await eventually(timeout: .seconds(120)) {
                let list = try? await client.controllerList()
                return list?.controllers.filter { $0.membership == "voter" }.count == 3
            }
            #expect(formed)

            // The writer: bounded in count and time; records what was acknowledged.
            var acknowledged: [String: String] = [:]
            var failed = 0
            let deadline = ContinuousClock.now + .seconds(60)
            var killed = false
            var index = 0
            while index < 300, ContinuousClock.now < deadline {
                if index == 100 && !killed {
                    // SIGKILL the leader mid-stream, then bring it back on the same port and data dir.
                    let list = try await client.controllerList()
                    let leaderAddress = try #require(list.controllers.first { $0.leader }?.address)
                    let position = try #require(addresses.firstIndex(of: leaderAddress))
                    await processes[position].stop(signal: SIGKILL)
                    processes[position].removeOutput()
                    processes[position] = try Self.controller(directories[position], port: ports[position], extra: [])
                    killed = true
                }
                let key = "w\(index)"
                do {
                    _ = try await client.varPut(key: key, value: Data("v\(index)".utf8), timeout: .seconds(5))
                    acknowledged[key] = "v\(index)"
                } catch {
                    failed += 1
                }
                index += 1
            }
            #expect(killed)
            print("leader SIGKILL under writes: \(acknowledged.count) acknowledged, \(failed) failed (outcome unknown or refused)")
            #expect(acknowledged.count >= 250, "acknowledged \(acknowledged.count), failed \(failed)")

            // Every member — the restarted one included — holds every acknowledged write.
            let expected = acknowledged
            for address in addresses {
                let member = try await AdminClient.connect(to: [address], credentials: admin)
                let complete = try await eventually(timeout: .seconds(60)) {
                    guard let variables = try? await member.varList(prefix: "w", stale: true) else { return false }
                    let present = Dictionary(variables.map { ($0.key, String(decoding: $0.value, as: UTF8.self)) }, uniquingKeysWith: { a, _ in a })
                    return expected.allSatisfy { present[$0.key] == $0.value }
                }
                #expect(complete, "\(address) is missing acknowledged writes")
                await member.close()
            }
            await client.close()
        } catch {
            for process in processes { await process.stop(signal: SIGKILL); process.removeOutput() }
            throw error
        }
        for process in processes { await process.stop(); process.removeOutput() }
    }
}
