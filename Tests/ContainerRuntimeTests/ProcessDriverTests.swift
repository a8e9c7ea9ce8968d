@testable import ContainerRuntime
import Foundation
import Messages
import TestSupport
import Testing

/// The process driver's tasks in cgroups of their own: limits enforced, OOM kills told apart, the cgroup gone
/// after the task. Needs root and cgroups (CI is root).
@Suite("Container runtime: process-driver tasks in their own cgroups", .serialized)
struct ProcessDriverTests {
    static func launch(_ id: String, command: String, memory: UInt64 = 0, pids: UInt64 = 0) -> TaskLaunch {
        var spec = Flotilla_V1_ServiceSpec()
        spec.driver = "process"
        spec.command = command
        spec.resources.memoryLimitBytes = memory
        spec.resources.pidsLimit = pids
        return TaskLaunch(taskID: id, serviceName: "svc", spec: spec, environment: [:], port: nil)
    }

    static func run(_ driver: ProcessDriver, _ launch: TaskLaunch) async throws -> TaskExit? {
        let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
        _ = try await driver.start(launch) { exit in
            exits.continuation.yield(exit)
            exits.continuation.finish()
        }
        return await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } } ?? nil
    }

    @Test("a memory limit kills what exceeds it and says OOM; a pids limit stops forks; the cgroup goes with the task", .enabled(if: getuid() == 0))
    func limits() async throws {
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        let driver = ProcessDriver(cgroupParent: parent)
        let plain = try await Self.run(driver, Self.launch("plain", command: "exit 3"))
        #expect(plain == TaskExit(status: 3, oomKilled: false))
        // dd's 64 MiB buffer does not fit in 32 MiB.
        let oom = try await Self.run(driver, Self.launch("oom", command: "exec dd if=/dev/zero of=/dev/null bs=64M count=1", memory: 32 << 20))
        #expect(oom == TaskExit(status: 137, oomKilled: true))
        let forks = try await Self.run(driver, Self.launch("forks", command: "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait", pids: 3))
        #expect(forks.map { $0.status != 0 } == true, "a fork past pids.max fails: \(String(describing: forks))")
        for hierarchy in ["memory", "cpu", "pids"] {
            let left = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/\(hierarchy)/\(parent)")) ?? []
            #expect(left.filter { $0.hasPrefix("proc-") }.isEmpty, "\(hierarchy): \(left)")
        }
    }
}
