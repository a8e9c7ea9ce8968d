import ContainerRuntime
import Foundation
import Testing

/// The bundle configuration Flotilla hands crun and runc: limits, namespaces, init and capabilities as the spec
/// says, and JSON with the runtime-spec's field names.
@Suite("Container runtime: OCI bundle config.json")
struct OCIRuntimeConfigTests {
    static func request(
        memory: UInt64 = 0, cpuLimit: UInt64 = 0, cpuReservation: UInt64 = 0, pids: UInt64 = 0, netns: String? = "/var/run/netns/flt-n1-t1",
        initBinary: String? = "/usr/bin/catatonit"
    ) -> OCIRuntimeConfigBuilder.Request {
        OCIRuntimeConfigBuilder.Request(
            taskID: "t1", args: ["httpd", "-f", "-p", "8080"], env: ["PATH=/bin", "PORT=8080"], rootfs: "/var/lib/flotilla/t1/rootfs",
            readonlyRootfs: true, hostname: "t1", cgroupsPath: "/flotilla-n1/t1", networkNamespacePath: netns,
            memoryLimitBytes: memory, cpuLimitMillis: cpuLimit, cpuReservationMillis: cpuReservation, pidsLimit: pids, initBinary: initBinary)
    }

    @Test("limits become cgroup settings: memory without extra swap, CPU quota per 100 ms period, shares from the reservation, pids")
    func limits() {
        let config = OCIRuntimeConfigBuilder.build(Self.request(memory: 256 << 20, cpuLimit: 500, cpuReservation: 250, pids: 100))
        #expect(config.linux.resources.memory == .init(limit: 256 << 20, swap: 256 << 20))
        #expect(config.linux.resources.cpu == .init(quota: 50_000, period: 100_000, shares: 256))
        #expect(config.linux.resources.pids == .init(limit: 100))
        #expect(config.linux.resources.devices == [.init(allow: false, access: "rwm")])
        #expect(config.linux.cgroupsPath == "/flotilla-n1/t1")

        let unlimited = OCIRuntimeConfigBuilder.build(Self.request())
        #expect(unlimited.linux.resources.memory == nil && unlimited.linux.resources.cpu == nil && unlimited.linux.resources.pids == nil)
        let reservedOnly = OCIRuntimeConfigBuilder.build(Self.request(cpuReservation: 1))
        #expect(reservedOnly.linux.resources.cpu == .init(quota: -1, period: 100_000, shares: 2))
    }

    @Test("the command runs under the bind-mounted init, which is PID 1; without one, the command is PID 1")
    func initProcess() {
        let config = OCIRuntimeConfigBuilder.build(Self.request())
        #expect(config.process.args == ["/.flotilla-init", "--", "httpd", "-f", "-p", "8080"])
        #expect(config.mounts.contains(.init(destination: "/.flotilla-init", type: "bind", source: "/usr/bin/catatonit", options: ["bind", "ro"])))
        let bare = OCIRuntimeConfigBuilder.build(Self.request(initBinary: nil))
        #expect(bare.process.args == ["httpd", "-f", "-p", "8080"])
        #expect(!bare.mounts.contains { $0.destination == "/.flotilla-init" })
    }

    @Test("a task joins the network namespace the agent wired, or shares the host's; the others are its own")
    func namespaces() {
        let config = OCIRuntimeConfigBuilder.build(Self.request())
        #expect(config.linux.namespaces.map(\.type) == ["pid", "ipc", "uts", "mount", "network"])
        #expect(config.linux.namespaces.last?.path == "/var/run/netns/flt-n1-t1")
        let host = OCIRuntimeConfigBuilder.build(Self.request(netns: nil))
        #expect(!host.linux.namespaces.contains { $0.type == "network" })
    }

    @Test("Docker's default capabilities, no new privileges, no terminal, a read-only root when asked, the default seccomp filter")
    func privileges() {
        let config = OCIRuntimeConfigBuilder.build(Self.request())
        #expect(config.process.capabilities.bounding.count == 14)
        #expect(!config.process.capabilities.bounding.contains("CAP_SYS_ADMIN"))
        #expect(!config.process.capabilities.bounding.contains("CAP_NET_ADMIN"))
        #expect(config.process.noNewPrivileges)
        #expect(!config.process.terminal)
        #expect(config.root == .init(path: "/var/lib/flotilla/t1/rootfs", readonly: true))
        #expect(config.linux.maskedPaths.contains("/proc/kcore"))
        let seccomp = try? #require(config.linux.seccomp)
        #expect(seccomp?.defaultAction == "SCMP_ACT_ALLOW")
        let denied = Set(seccomp?.syscalls.flatMap(\.names) ?? [])
        #expect(["keyctl", "kexec_load", "bpf", "perf_event_open", "unshare", "setns", "mount", "reboot"].allSatisfy(denied.contains))
        #expect(seccomp?.syscalls.allSatisfy { $0.action == "SCMP_ACT_ERRNO" && $0.errnoRet == 1 } == true)
    }

    @Test("the JSON uses the runtime-spec's names and leaves out what is unset")
    func json() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = try encoder.encode(OCIRuntimeConfigBuilder.build(Self.request(memory: 1 << 20)))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["ociVersion"] as? String == "1.0.2")
        let linux = try #require(object["linux"] as? [String: Any])
        let resources = try #require(linux["resources"] as? [String: Any])
        #expect((resources["memory"] as? [String: Any])?["limit"] as? Int == 1 << 20)
        #expect(resources["cpu"] == nil && resources["pids"] == nil)
        let namespaces = try #require(linux["namespaces"] as? [[String: Any]])
        #expect(namespaces.first?["path"] == nil)
        let process = try #require(object["process"] as? [String: Any])
        #expect(process["noNewPrivileges"] as? Bool == true)
        #expect((process["user"] as? [String: Any])?["uid"] as? Int == 0)
    }
}

/// Which runtime the agent drives: crun when it can run, runc otherwise, and a clear refusal when neither can.
@Suite("Container runtime: choosing crun or runc")
struct OCIRuntimeChoiceTests {
    let both = ["crun": "/usr/bin/crun", "runc": "/usr/sbin/runc"]

    @Test("detection prefers crun, and falls back to runc when crun is missing or blocked by hybrid cgroups")
    func detection() throws {
        #expect(try OCIRuntimeChoice.choose(preferred: nil, installed: both, hybridControllersLeft: []).get().name == "crun")
        let blocked = try OCIRuntimeChoice.choose(preferred: nil, installed: both, hybridControllersLeft: ["hugetlb"]).get()
        #expect(blocked.name == "runc")
        #expect(blocked.reason.contains("hugetlb"))
        #expect(try OCIRuntimeChoice.choose(preferred: nil, installed: ["runc": "/usr/sbin/runc"], hybridControllersLeft: []).get().name == "runc")
    }

    @Test("an explicit choice is honoured or refused with what to do", arguments: [
        ("crun", ["runc": "/r"], [String](), OCIRuntimeChoice.Problem.notInstalled("crun")),
        ("crun", ["crun": "/c"], ["hugetlb"], .crunBlockedByHybridCgroups(controllers: ["hugetlb"])),
        ("kata", ["crun": "/c"], [], .unknownRuntime("kata")),
        (nil, [:], [], .noneInstalled),
        (nil, ["crun": "/c"], ["hugetlb"], .crunBlockedByHybridCgroups(controllers: ["hugetlb"])),
    ] as [(String?, [String: String], [String], OCIRuntimeChoice.Problem)])
    func refusals(_ preferred: String?, _ installed: [String: String], _ left: [String], _ problem: OCIRuntimeChoice.Problem) {
        let result = OCIRuntimeChoice.choose(preferred: preferred, installed: installed, hybridControllersLeft: left)
        #expect(throws: problem) { try result.get() }
        #expect(!problem.description.isEmpty)
    }

    @Test("the controllers left in the unified hierarchy are read from cgroup.controllers")
    func unifiedControllers() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("controllers-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "hugetlb rdma\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(HybridCgroups.controllersInUnified(file: file) == ["hugetlb", "rdma"])
        #expect(HybridCgroups.controllersInUnified(file: file + ".missing").isEmpty)
    }
}
