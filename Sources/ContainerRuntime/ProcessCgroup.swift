import Foundation
import Messages
#if canImport(Glibc)
import Glibc
#endif

/// A process-driver task's own cgroup with its limits, where the agent can make one (root, cgroups mounted): on
/// cgroup v1 a directory in each of the memory, cpu and pids hierarchies, on v2 one in the unified hierarchy.
/// Best effort: where it cannot be made, the task runs without one, as before. The task is moved in right after
/// it is spawned (what it forks in that instant stays outside).
struct ProcessCgroup: Sendable {
    /// The task's directory in each hierarchy it joined.
    let directories: [String]
    /// Where `memory.oom_control` (v1) or `memory.events` (v2) tells of OOM kills.
    let memory: String?
    let unified: Bool

    static let root = "/sys/fs/cgroup"

    /// Makes `parent/name` and writes the limits of `resources`; nil when no hierarchy could be used.
    static func create(parent: String, name: String, resources: Flotilla_V1_Resources) -> ProcessCgroup? {
        guard getuid() == 0 else { return nil }
        let quota = resources.cpuLimitMillis > 0 ? Int(resources.cpuLimitMillis) * 100 : -1
        if FileManager.default.fileExists(atPath: root + "/memory/memory.limit_in_bytes") {
            var directories: [String] = []
            var memory: String?
            let settings: [(hierarchy: String, files: [(String, String)])] = [
                ("memory", resources.memoryLimitBytes > 0 ? [("memory.limit_in_bytes", "\(resources.memoryLimitBytes)")] : []),
                ("cpu", [("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "\(quota)")]
                    + (resources.cpuReservationMillis > 0 ? [("cpu.shares", "\(max(2, resources.cpuReservationMillis * 1024 / 1000))")] : [])),
                ("pids", resources.pidsLimit > 0 ? [("pids.max", "\(resources.pidsLimit)")] : []),
                // For the CPU time it used (the task's usage report); where cpu and cpuacct are mounted together
                // this is the cpu directory again.
                ("cpuacct", []),
            ]
            for (hierarchy, files) in settings where FileManager.default.fileExists(atPath: "\(root)/\(hierarchy)/cgroup.procs") {
                let directory = "\(root)/\(hierarchy)/\(parent)/\(name)"
                guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)) != nil,
                      files.allSatisfy({ write($1, to: directory + "/" + $0) }) else { continue }
                directories.append(directory)
                if hierarchy == "memory" { memory = directory }
            }
            return directories.isEmpty ? nil : ProcessCgroup(directories: directories, memory: memory, unified: false)
        }
        guard FileManager.default.fileExists(atPath: root + "/cgroup.controllers") else { return nil }
        // cgroup v2: the controllers must be enabled for the children of every level above.
        _ = write("+memory +cpu +pids", to: root + "/cgroup.subtree_control")
        let parentDirectory = root + "/" + parent
        try? FileManager.default.createDirectory(atPath: parentDirectory, withIntermediateDirectories: true)
        _ = write("+memory +cpu +pids", to: parentDirectory + "/cgroup.subtree_control")
        let directory = parentDirectory + "/" + name
        guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)) != nil else { return nil }
        if resources.memoryLimitBytes > 0 { _ = write("\(resources.memoryLimitBytes)", to: directory + "/memory.max") }
        if quota > 0 { _ = write("\(quota) 100000", to: directory + "/cpu.max") }
        if resources.pidsLimit > 0 { _ = write("\(resources.pidsLimit)", to: directory + "/pids.max") }
        return ProcessCgroup(directories: [directory], memory: directory, unified: true)
    }

    /// Moves `pid` into every hierarchy's directory.
    func add(_ pid: Int32) {
        for directory in directories { _ = Self.write("\(pid)", to: directory + "/cgroup.procs") }
    }

    /// OOM kills in the group so far.
    var oomKills: Int {
        guard let memory else { return 0 }
        let (file, key) = unified ? ("memory.events", "oom_kill ") : ("memory.oom_control", "oom_kill ")
        guard let text = try? String(contentsOfFile: memory + "/" + file, encoding: .utf8) else { return 0 }
        return text.split(separator: "\n").first { $0.hasPrefix(key) }.flatMap { Int($0.dropFirst(key.count)) } ?? 0
    }

    /// Removes the directories once the task has ended: what it left running in them is killed first (as a
    /// container's processes end with it), then each is removed (waiting up to a second for the kills).
    func remove() {
        for directory in directories {
            for attempt in 0..<50 {
                if rmdir(directory) == 0 || errno == ENOENT { break }
                let text = (try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)) ?? ""
                for pid in text.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
                if attempt < 49 { usleep(20_000) }
            }
        }
    }

    static func write(_ value: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return value.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
    }
}
