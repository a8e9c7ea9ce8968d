@testable import ContainerRuntime
import Logging
import Messages
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The generated config.json run by the real runtimes. Needs root, busybox-static (the rootfs), catatonit, and
/// crun and/or runc (CI installs them); skipped without them. crun runs after the hybrid-cgroup fix the agent
/// applies (`HybridCgroups.moveToV1`).
@Suite("Container runtime: config.json under crun and runc", .serialized)
struct OCIRuntimeRunTests {
    static var available: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/catatonit")
    }

    /// A busybox root file system in a fresh bundle directory.
    static func bundle() throws -> String {
        let bundle = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-bundle-\(UUID().uuidString)").path
        let rootfs = bundle + "/rootfs"
        for directory in ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root"] {
            try FileManager.default.createDirectory(atPath: rootfs + "/" + directory, withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: rootfs + "/bin/busybox")
        for applet in ["sh", "dd", "sleep", "true"] {
            try FileManager.default.createSymbolicLink(atPath: rootfs + "/bin/" + applet, withDestinationPath: "busybox")
        }
        return bundle
    }

    /// Runs `command` in a container of `runtime` with a 32 MiB memory limit; its exit status.
    static func run(_ runtime: OCIRuntimeChoice, _ command: String, cgroupParent: String) async throws -> Int32 {
        let bundle = try bundle()
        defer { try? FileManager.default.removeItem(atPath: bundle) }
        let id = "t\(UInt32.random(in: 1...UInt32.max))"
        let config = OCIRuntimeConfigBuilder.build(.init(
            taskID: id, args: ["sh", "-c", command], env: ["PATH=/bin"], rootfs: bundle + "/rootfs", readonlyRootfs: true,
            hostname: id, cgroupsPath: "/\(cgroupParent)/\(id)", networkNamespacePath: nil, memoryLimitBytes: 32 << 20,
            cpuLimitMillis: 500, cpuReservationMillis: 100, pidsLimit: 20, initBinary: "/usr/bin/catatonit"))
        try JSONEncoder().encode(config).write(to: URL(fileURLWithPath: bundle + "/config.json"))
        let state = bundle + "/state"
        let result = try await HostProcess.run(runtime.binary, ["--root", state, "run", "--bundle", bundle, id])
        _ = try? await HostProcess.run(runtime.binary, ["--root", state, "delete", "--force", id])
        return result.status
    }

    /// The runtimes installed here that can run (crun after the hybrid-cgroup fix).
    static func runtimes() -> [OCIRuntimeChoice] {
        let left = HybridCgroups.moveToV1()
        return ["crun", "runc"].compactMap { name in
            guard let binary = OCIRuntimeChoice.which(name) else { return nil }
            return try? OCIRuntimeChoice.choose(preferred: name, installed: [name: binary], hybridControllersLeft: left).get()
        }
    }

    @Test("exit statuses come through the init exactly, and the memory limit kills what exceeds it", .enabled(if: available))
    func exitStatusesAndLimits() async throws {
        let runtimes = Self.runtimes()
        #expect(!runtimes.isEmpty, "neither crun nor runc can run here")
        print("runtimes under test: \(runtimes.map(\.name))")
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            // The runtimes remove each container's cgroup; the parent is ours to remove.
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        for runtime in runtimes {
            #expect(try await Self.run(runtime, "exit 42", cgroupParent: parent) == 42, "\(runtime.name)")
            #expect(try await Self.run(runtime, "true", cgroupParent: parent) == 0, "\(runtime.name)")
            // 64 MiB in one buffer under a 32 MiB limit: the kernel kills it (SIGKILL, 137).
            #expect(try await Self.run(runtime, "dd if=/dev/zero of=/dev/null bs=64M count=1", cgroupParent: parent) == 137, "\(runtime.name)")
            // The init forwards SIGTERM; a command that kills itself with it ends with 143.
            #expect(try await Self.run(runtime, "kill -TERM $$; sleep 5", cgroupParent: parent) == 143, "\(runtime.name)")
        }
    }
}

/// The OCI driver end to end with each runtime: a busybox image's root file system under an overlay, exit
/// statuses and OOM kills reported exactly, a stop through the init. Root, catatonit, busybox-static and crun
/// and/or runc needed (CI installs them).
@Suite("Container runtime: the OCI driver", .serialized)
struct OCIDriverTests {
    static func launch(_ id: String, command: String, memory: UInt64 = 0, cpuMillis: UInt64 = 0, pids: UInt64 = 0) -> TaskLaunch {
        var spec = Flotilla_V1_ServiceSpec()
        spec.driver = "oci"
        spec.command = command
        spec.resources.memoryLimitBytes = memory
        spec.resources.cpuLimitMillis = cpuMillis
        spec.resources.pidsLimit = pids
        return TaskLaunch(taskID: id, serviceName: "svc", spec: spec, environment: ["GREETING": "hi"], port: 8080)
    }

    /// Starts `launch` and waits (bounded) for its end.
    static func runToExit(_ driver: OCIDriver, _ launch: TaskLaunch) async throws -> TaskExit? {
        let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
        try await driver.prepare(launch)
        _ = try await driver.start(launch) { exit in
            exits.continuation.yield(exit)
            exits.continuation.finish()
        }
        return await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } } ?? nil
    }

    @Test("exit statuses exact, OOM reported as OOM, the environment handed in, SIGTERM through the init", .enabled(if: OCIRuntimeRunTests.available))
    func lifecycle() async throws {
        let runtimes = OCIRuntimeRunTests.runtimes()
        #expect(!runtimes.isEmpty)
        let image = try OCIRuntimeRunTests.bundle()
        defer { try? FileManager.default.removeItem(atPath: image) }
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-oci-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: work) }
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        for runtime in runtimes {
            let driver = try OCIDriver(
                runtime: runtime, stateRoot: work + "/\(runtime.name)-state", bundles: work + "/\(runtime.name)-bundles",
                cgroupParent: parent, initBinary: "/usr/bin/catatonit"
            ) { _ in (image + "/rootfs", ImageConfig(env: ["PATH=/bin"])) }
            let seven = try await Self.runToExit(driver, Self.launch("seven-\(runtime.name)", command: "exit 7"))
            #expect(seven == TaskExit(status: 7, oomKilled: false), "\(runtime.name)")
            // A read-only root refuses writes (under the default seccomp filter, like every container here).
            var readOnly = Self.launch("ro-\(runtime.name)", command: "echo x > /written")
            var spec = readOnly.spec
            spec.readOnlyRoot = true
            readOnly = TaskLaunch(taskID: readOnly.taskID, serviceName: "svc", spec: spec, environment: [:], port: nil)
            #expect(try await Self.runToExit(driver, readOnly).map { $0.status != 0 } == true, "\(runtime.name): read-only root")
            #expect(try await Self.runToExit(driver, Self.launch("rw-\(runtime.name)", command: "echo x > /written")) == TaskExit(status: 0, oomKilled: false))
            let env = try await Self.runToExit(driver, Self.launch("env-\(runtime.name)", command: "test \"$GREETING$PORT\" = hi8080"))
            #expect(env == TaskExit(status: 0, oomKilled: false), "\(runtime.name): the environment reaches the container")
            let oom = try await Self.runToExit(
                driver, Self.launch("oom-\(runtime.name)", command: "dd if=/dev/zero of=/dev/null bs=64M count=1", memory: 32 << 20))
            #expect(oom == TaskExit(status: 137, oomKilled: true), "\(runtime.name)")

            // A long runner stopped on purpose: SIGTERM through catatonit, 143.
            let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
            let sleeper = Self.launch("sleeper-\(runtime.name)", command: "sleep 60")
            try await driver.prepare(sleeper)
            let handle = try await driver.start(sleeper) { exit in
                exits.continuation.yield(exit)
                exits.continuation.finish()
            }
            // Health-check commands run inside the container, with the task's environment; a slow one is cut.
            let inside = try await driver.exec(handle, launch: sleeper, command: ["/bin/sh", "-c", "test \"$GREETING\" = hi && test -d /proc/1"], timeout: .seconds(10))
            #expect(inside == 0, "\(runtime.name): exec in the container")
            let failing = try await driver.exec(handle, launch: sleeper, command: ["/bin/sh", "-c", "exit 3"], timeout: .seconds(10))
            #expect(failing == 3, "\(runtime.name)")
            await #expect(throws: (any Error).self, "\(runtime.name): a check that outlives its timeout") {
                _ = try await driver.exec(handle, launch: sleeper, command: ["sleep", "10"], timeout: .milliseconds(300))
            }
            let ended = Flag()
            async let stopped: Void = driver.stop(handle, grace: .seconds(10)) { ended.value }
            let exit = await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } } ?? nil
            ended.set()
            await stopped
            #expect(exit == TaskExit(status: 143, oomKilled: false), "\(runtime.name)")
            #expect(try FileManager.default.contentsOfDirectory(atPath: work + "/\(runtime.name)-bundles").isEmpty, "bundles removed")
        }
    }

    @Test("image garbage collection through the driver keeps the images of prepared and running tasks and removes the rest", .enabled(if: OCIRuntimeRunTests.available))
    func imageGarbage() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-image-gc")
        let store = try ImageStore(root: work.path + "/images")
        try Self.writeLayout(work.path + "/layout")
        let driver = try OCIDriver(
            runtime: try #require(OCIRuntimeRunTests.runtimes().first), stateRoot: work.path + "/state", bundles: work.path + "/bundles",
            cgroupParent: "flotilla-test-gc", initBinary: "/usr/bin/catatonit", imageStore: store
        ) { launch in
            let image = try await store.prepare(reference: launch.spec.image)
            return (image.rootfs, image.config)
        }
        defer { for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] { rmdir("/sys/fs/cgroup/\(hierarchy)/flotilla-test-gc") } }
        var launch = Self.launch("gc-sleeper", command: "sleep 60")
        var spec = launch.spec
        spec.image = "oci:\(work.path)/layout:1.0"
        launch = TaskLaunch(taskID: launch.taskID, serviceName: "svc", spec: spec, environment: [:], port: nil)
        try await driver.prepare(launch)
        let everything = ImageGarbagePolicy(maximumUnusedAge: .zero, recentUseGrace: .zero)
        #expect(try driver.collectImageGarbage(policy: everything).isEmpty, "a prepared task's image stays")
        #expect(driver.images().map(\.inUse) == [1])
        let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let handle = try await driver.start(launch) { exit in
            exits.continuation.yield(exit)
            exits.continuation.finish()
        }
        #expect(try driver.collectImageGarbage(policy: everything).isEmpty, "a running task's image stays")
        let ended = Flag()
        async let stopped: Void = driver.stop(handle, grace: .seconds(5)) { ended.value }
        _ = await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } }
        ended.set()
        await stopped
        #expect(driver.images().map(\.inUse) == [0])
        #expect(try driver.collectImageGarbage(policy: everything).map(\.reference) == ["oci:\(work.path)/layout:1.0"])
        #expect(driver.images().isEmpty)
    }

    /// An OCI image layout tagged "1.0" holding the test bundle's busybox root.
    static func writeLayout(_ path: String) throws {
        let image = try OCIRuntimeRunTests.bundle()
        defer { try? FileManager.default.removeItem(atPath: image) }
        try writeOCILayout(path, rootfs: image + "/rootfs")
    }

    @Test("a container's stdout and stderr are captured into its task log, each line with its stream", .enabled(if: OCIRuntimeRunTests.available))
    func logsCaptured() async throws {
        let image = try OCIRuntimeRunTests.bundle()
        defer { try? FileManager.default.removeItem(atPath: image) }
        let work = try TemporaryDirectory(prefix: "flotilla-oci-logs")
        let logs = try TaskLogs(configuration: TaskLogConfiguration(directory: work.path + "/logs"), logger: Logger(label: "logs"))
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] { rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)") }
        }
        for runtime in OCIRuntimeRunTests.runtimes() {
            let driver = try OCIDriver(
                runtime: runtime, stateRoot: work.path + "/\(runtime.name)-state", bundles: work.path + "/\(runtime.name)-bundles",
                cgroupParent: parent, initBinary: "/usr/bin/catatonit"
            ) { _ in (image + "/rootfs", ImageConfig(env: ["PATH=/bin"])) }
            let id = "talk-\(runtime.name)"
            let plain = Self.launch(id, command: "echo out $FLOTILLA_TASK_ID; echo err $FLOTILLA_TASK_ID >&2")
            let launch = TaskLaunch(
                taskID: id, serviceName: "svc", spec: plain.spec, environment: plain.environment, port: nil, output: try await logs.capture(id))
            #expect(try await Self.runToExit(driver, launch) == TaskExit(status: 0, oomKilled: false), "\(runtime.name)")
            let captured = try await eventually {
                let records = (try logs.cursor(id, query: TaskLogQuery())?.next()) ?? []
                return records.count == 2
            }
            let records = (try logs.cursor(id, query: TaskLogQuery())?.next()) ?? []
            #expect(captured, "\(runtime.name): \(records.map { String(decoding: $0.text, as: UTF8.self) })")
            #expect(records.map(\.stream).sorted { $0.rawValue < $1.rawValue } == [.stderr, .stdout])
            #expect(Set(records.map { String(decoding: $0.text, as: UTF8.self) }) == ["out \(id)", "err \(id)"])
            await logs.release(id)
        }
        await logs.shutdown()
    }

    @Test("CPU and pids limits are enforced: a busy loop is throttled to its quota, a fork beyond the pids limit fails", .enabled(if: OCIRuntimeRunTests.available))
    func limits() async throws {
        let image = try OCIRuntimeRunTests.bundle()
        defer { try? FileManager.default.removeItem(atPath: image) }
        let work = try TemporaryDirectory(prefix: "flotilla-limits")
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        for runtime in OCIRuntimeRunTests.runtimes() {
            let driver = try OCIDriver(
                runtime: runtime, stateRoot: work.path + "/\(runtime.name)-state", bundles: work.path + "/\(runtime.name)-bundles",
                cgroupParent: parent, initBinary: "/usr/bin/catatonit"
            ) { _ in (image + "/rootfs", ImageConfig(env: ["PATH=/bin"])) }

            // Forking: the same command succeeds without a limit and fails with one (init + sh + 2 sleeps fit in 4).
            let forks = "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait"
            let free = try await Self.runToExit(driver, Self.launch("forks-\(runtime.name)", command: forks))
            #expect(free == TaskExit(status: 0, oomKilled: false), "\(runtime.name): no pids limit")
            let limited = try await Self.runToExit(driver, Self.launch("pids-\(runtime.name)", command: forks, pids: 4))
            #expect(limited.map { $0.status != 0 } == true, "\(runtime.name): a fork past pids.max fails (\(String(describing: limited)))")

            // A busy loop at 0.2 cores: the CPU cgroup holds the quota and throttles it.
            let busy = Self.launch("busy-\(runtime.name)", command: "while :; do :; done", cpuMillis: 200, pids: 16)
            let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
            try await driver.prepare(busy)
            let handle = try await driver.start(busy) { exit in
                exits.continuation.yield(exit)
                exits.continuation.finish()
            }
            try await Task.sleep(for: .seconds(1))
            let cgroup = "\(parent)/flt-busy-\(runtime.name)"
            let read = { (file: String) in (try? String(contentsOfFile: "/sys/fs/cgroup/\(file)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(read("cpu/\(cgroup)/cpu.cfs_quota_us") == "20000", "\(runtime.name)")
            #expect(read("cpu/\(cgroup)/cpu.cfs_period_us") == "100000", "\(runtime.name)")
            #expect(read("pids/\(cgroup)/pids.max") == "16", "\(runtime.name)")
            let throttled = read("cpu/\(cgroup)/cpu.stat")?.split(separator: "\n").first { $0.hasPrefix("nr_throttled ") }
                .flatMap { Int($0.split(separator: " ")[1]) } ?? 0
            #expect(throttled > 0, "\(runtime.name): the busy loop was throttled")
            // What it uses, as the runtime reports it (the autoscaler's CPU signal).
            let stats = try #require(driver.stats(handle), "\(runtime.name)")
            #expect(stats.cpuNanoseconds > 50_000_000, "\(runtime.name): some CPU used (\(stats.cpuNanoseconds) ns)")
            #expect(stats.memoryBytes > 0, "\(runtime.name)")
            let ended = Flag()
            async let stopped: Void = driver.stop(handle, grace: .seconds(5)) { ended.value }
            _ = await withTimeout(.seconds(20)) { await exits.stream.first { _ in true } }
            ended.set()
            await stopped
        }
    }
}

/// A flag set from one task and read from another.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var raised = false
    func set() { lock.withLock { raised = true } }
    var value: Bool { lock.withLock { raised } }
}
