@testable import ContainerRuntime
import Foundation
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
