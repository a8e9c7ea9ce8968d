@testable import ContainerRuntime
import Foundation
import Messages
import TestSupport
import Testing

/// A task's CPU and memory read from its cgroup, for the usage reports the autoscaler measures CPU by.
@Suite("Container runtime: task usage from cgroups", .serialized)
struct CgroupUsageTests {
    static func write(_ text: String, to path: String) throws {
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: false, encoding: .utf8)
    }

    @Test("cpu.stat's usage_usec and memory.current (v2) are parsed; other lines and blanks are ignored")
    func parsing() {
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n"
        #expect(CgroupUsage.usageMicroseconds(cpuStat: stat) == 1_234_567)
        #expect(CgroupUsage.usageMicroseconds(cpuStat: "user_usec 5\n") == nil)
        #expect(CgroupUsage.usageMicroseconds(cpuStat: "usage_usec x\n") == nil)
        #expect(CgroupUsage.number("4096\n") == 4096)
        #expect(CgroupUsage.number("max\n") == nil)
    }

    @Test("a v2 cgroup is found in the unified directory; a v1 cgroup in the cpuacct and memory hierarchies; none is nil")
    func lookup() throws {
        let v2 = try TemporaryDirectory(prefix: "flotilla-cgroup-v2")
        try Self.write("usage_usec 2500\nuser_usec 2000\n", to: v2.path + "/flotilla-n1/proc-t1/cpu.stat")
        try Self.write("8192\n", to: v2.path + "/flotilla-n1/proc-t1/memory.current")
        #expect(CgroupUsage(root: v2.path).stats(ofCgroup: "flotilla-n1/proc-t1") == TaskStats(cpuNanoseconds: 2_500_000, memoryBytes: 8192))
        #expect(CgroupUsage(root: v2.path).stats(ofCgroup: "/flotilla-n1/proc-t1") != nil, "a leading slash (OCI cgroupsPath) is the same")
        #expect(CgroupUsage(root: v2.path).stats(ofCgroup: "flotilla-n1/proc-t2") == nil)

        let v1 = try TemporaryDirectory(prefix: "flotilla-cgroup-v1")
        try Self.write("123456789\n", to: v1.path + "/cpuacct/flotilla-n1/c1/cpuacct.usage")
        try Self.write("1048576\n", to: v1.path + "/memory/flotilla-n1/c1/memory.usage_in_bytes")
        #expect(CgroupUsage(root: v1.path).stats(ofCgroup: "flotilla-n1/c1") == TaskStats(cpuNanoseconds: 123_456_789, memoryBytes: 1_048_576))
        try FileManager.default.removeItem(atPath: v1.path + "/memory/flotilla-n1/c1/memory.usage_in_bytes")
        #expect(CgroupUsage(root: v1.path).stats(ofCgroup: "flotilla-n1/c1")?.memoryBytes == 0, "CPU without memory still counts")
    }

    @Test("a busy process-driver task's cgroup counts its CPU time; the driver forgets it when it ends (root, real cgroups)",
          .enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/sys/fs/cgroup")))
    func processDriverTask() async throws {
        let parent = "flotilla-test-\(UInt32.random(in: 1...UInt32.max))"
        defer {
            for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                rmdir("/sys/fs/cgroup/\(hierarchy)/\(parent)")
            }
        }
        let driver = ProcessDriver(cgroupParent: parent)
        let exits = AsyncStream<TaskExit>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let handle = try await driver.start(ProcessDriverTests.launch("busy", command: "while :; do :; done")) { exit in
            exits.continuation.yield(exit)
        }
        let first = driver.stats(handle)
        try #require(first != nil, "no cgroup could be read under /sys/fs/cgroup for \(parent)")
        let grew = try await eventually(timeout: .seconds(10)) { (driver.stats(handle)?.cpuNanoseconds ?? 0) > (first?.cpuNanoseconds ?? 0) + 50_000_000 }
        #expect(grew, "a busy loop uses CPU time: \(String(describing: first)) then \(String(describing: driver.stats(handle)))")
        #expect((driver.stats(handle)?.memoryBytes ?? 0) > 0)
        await driver.stop(handle, grace: .seconds(2)) { false }
        _ = await withTimeout(.seconds(10)) { await exits.stream.first { _ in true } }
        #expect(driver.stats(handle) == nil, "an ended task has no usage")
    }
}
