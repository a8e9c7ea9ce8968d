import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// An agent process restarted under a running container: the container keeps serving while no agent runs, the
/// next agent process adopts it (same task, no restart), and still supervises it. Needs root, busybox-static,
/// catatonit, crun or runc, iproute2 and nftables; CI has them.
@Suite("Agent restart: containers keep running and are re-adopted", .serialized)
struct AgentRestartTests {
    static func flotilla(_ address: String, _ credentials: String, _ arguments: [String]) async throws -> String {
        let result = try await ChildProcess.run(
            try FlotillaBinaries.path("flotilla"), ["--controller", address, "--credentials", credentials] + arguments)
        guard result.status == 0 else { throw ChildProcessError("flotilla \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result.stdout
    }

    static func tasks(_ address: String, _ credentials: String) async -> [[String: Any]] {
        let text = (try? await flotilla(address, credentials, ["service", "ps", "keep", "--output", "json"])) ?? "[]"
        let all = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]) ?? []
        return all.filter { $0["desired"] as? String == "running" }
    }

    static var runtimes: [String] { ["crun", "runc"].filter { OCIRuntimeChoice.which($0) != nil } }

    @Test("the container outlives its agent, is adopted by the next agent process without a restart, and is still supervised",
          .enabled(if: NetnsLab.available), arguments: runtimes)
    func readoption(runtime: String) async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-agent-restart")
        var processes: [ChildProcess] = []
        var nodeID = ""
        defer {
            if !nodeID.isEmpty {
                let prefix = NodeNetwork.prefix(for: NodeID(nodeID)) + "-"
                for name in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where name.hasPrefix(prefix) {
                    _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", name]).waitUntilExit()
                }
            }
            OCIServiceTests.removeCgroupParents()
        }
        let agentArguments = { (extra: [String]) in
            ["--data-dir", work.path + "/agent", "--run-dir", work.path + "/run", "--name", "keeper", "--runtime", runtime] + extra
        }
        do {
            let (controller, address) = try await ControllerProcessTests.startController(dataDirectory: work.path + "/controller", initialize: true)
            processes.append(controller)
            let credentials = work.path + "/controller/admin.creds"
            let token = try await Self.flotilla(address, credentials, ["token", "create", "--role", "agent", "--quiet"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let first = try ChildProcess(
                try FlotillaBinaries.path("flotilla-agent"), agentArguments(["--controller", address, "--token", token]))
            processes.append(first)
            try OCIServiceTests.makeBusyboxLayout(work.path + "/image")
            _ = try await Self.flotilla(address, credentials, [
                "service", "create", "keep", "--driver", "oci", "--image", "oci:\(work.path)/image:1.0", "--publish", "8089",
                "--restart-delay", "100ms",
                "--command", "mkdir -p /www && echo $FLOTILLA_TASK_ID > /www/index.html && exec httpd -f -p $PORT -h /www", "--detach"])
            let started = try await eventually(timeout: .seconds(60)) {
                let tasks = await Self.tasks(address, credentials)
                return tasks.count == 1 && tasks[0]["current"] as? String == "running"
            }
            let afterStart = await Self.tasks(address, credentials)
            try #require(started, "tasks: \(afterStart); agent: \(first.standardError)")
            let task = try #require(await Self.tasks(address, credentials).first)
            let taskID = try #require(task["id"] as? String)
            let taskAddress = try #require(task["address"] as? String)
            let nodes = try JSONSerialization.jsonObject(with: Data(try await Self.flotilla(address, credentials, ["node", "ls", "--output", "json"]).utf8)) as? [[String: Any]]
            nodeID = nodes?.first?["id"] as? String ?? ""
            #expect(try await OCIServiceTests.answers(taskAddress, with: taskID))

            // The agent stops; its container keeps serving.
            _ = await first.stop()
            #expect(try await OCIServiceTests.answers(taskAddress, with: taskID), "the container serves while no agent runs")

            // The next agent process adopts it: same task, no restart.
            let second = try ChildProcess(try FlotillaBinaries.path("flotilla-agent"), agentArguments(["--controller", address]))
            processes.append(second)
            let adopted = try await eventually(timeout: .seconds(60)) {
                let tasks = await Self.tasks(address, credentials)
                return tasks.count == 1 && tasks[0]["id"] as? String == taskID && (tasks[0]["message"] as? String ?? "").contains("re-adopted")
            }
            let afterAdoption = await Self.tasks(address, credentials)
            #expect(adopted, "tasks: \(afterAdoption); agent: \(second.standardError)")
            #expect(afterAdoption.first?["restarts"] as? Int == 0)
            #expect(try await OCIServiceTests.answers(taskAddress, with: taskID))

            // Still supervised: when the adopted container dies, the agent notices and restarts it in place.
            let killed = try await ChildProcess.run("/usr/bin/pkill", ["-KILL", "-f", "httpd -f -p 8089 -h /www"])
            #expect(killed.status == 0)
            let restarted = try await eventually(timeout: .seconds(60)) {
                let tasks = await Self.tasks(address, credentials)
                return tasks.count == 1 && tasks[0]["restarts"] as? Int == 1 && tasks[0]["current"] as? String == "running"
            }
            let afterKill = await Self.tasks(address, credentials)
            #expect(restarted, "tasks: \(afterKill)")
            #expect(try await OCIServiceTests.answers(taskAddress, with: taskID), "back at the same address")

            _ = try await Self.flotilla(address, credentials, ["service", "rm", "keep"])
            #expect(try await eventually(timeout: .seconds(30)) { await Self.tasks(address, credentials).isEmpty })
        } catch {
            for process in processes.reversed() { await process.stop() }
            throw error
        }
        for process in processes.reversed() { await process.stop() }
    }
}
