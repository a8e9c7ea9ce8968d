import ContainerRuntime
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Faults a lab injects: a container's processes killed or stopped, a host cut off the switch.
extension NetnsLab {
    /// The host of agent node `name` ("n3" runs on host 3).
    func hostIndex(ofNode name: String) throws -> Int {
        guard name.hasPrefix("n"), let index = Int(name.dropFirst()), (2...hosts).contains(index) else {
            throw ChildProcessError("\(name) is not an agent node of this lab (n2...n\(hosts))")
        }
        return index
    }

    /// The pid of the task's container process (catatonit, or the command without it): the OCI driver writes it to
    /// `<agent data dir>/bundles/flt-<task>/container.pid`.
    func containerPID(task: String, node: String) throws -> Int32 {
        let path = work.path + "/agent\(try hostIndex(ofNode: node))/bundles/flt-\(task)/container.pid"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8),
              let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else {
            throw ChildProcessError("no container pid for task \(task) on \(node) at \(path); is the task running?")
        }
        return pid
    }

    /// Every process of the task's container: the members of its cgroup (the memory hierarchy's on cgroup v1 and
    /// hybrid machines, the unified one on cgroup v2).
    func containerProcesses(task: String, node: String) throws -> [Int32] {
        let pid = try containerPID(task: task, node: node)
        let memberships = ProcFile.read("/proc/\(pid)/cgroup") ?? ""
        let entries = memberships.split(separator: "\n").map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }
        let directory: String
        if let memory = entries.first(where: { $0.count == 3 && $0[1].split(separator: ",").contains("memory") }) {
            directory = "/sys/fs/cgroup/memory" + memory[2]
        } else if let unified = entries.first(where: { $0.count == 3 && $0[0] == "0" && $0[1].isEmpty }) {
            directory = "/sys/fs/cgroup" + unified[2]
        } else {
            throw ChildProcessError("process \(pid) of task \(task) has no memory or unified cgroup: \(memberships)")
        }
        let members = (try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)) ?? ""
        let pids = members.split(separator: "\n").compactMap { Int32($0) }
        guard pids.contains(pid) else {
            throw ChildProcessError("\(directory)/cgroup.procs does not list the container's process \(pid): \(members)")
        }
        return pids
    }

    /// SIGKILLs the task's container process (the init of its pid namespace: the kernel kills the rest with it) and
    /// returns once every process of the container is gone, so its sockets are closed.
    func killContainer(task: String, node: String) async throws {
        let processes = try containerProcesses(task: task, node: node)
        kill(try containerPID(task: task, node: node), SIGKILL)
        let gone = try await eventually(timeout: .seconds(10)) { processes.allSatisfy(Self.isGone) }
        guard gone else { throw ChildProcessError("the processes \(processes) of task \(task) outlived SIGKILL by 10 s") }
    }

    /// Sends `signal` to every process of the task's container (SIGSTOP hangs it, SIGCONT resumes it).
    @discardableResult
    func signalContainer(_ signal: Int32, task: String, node: String) throws -> [Int32] {
        let processes = try containerProcesses(task: task, node: node)
        for pid in processes { kill(pid, signal) }
        return processes
    }

    /// Ended: no such process, or a zombie waiting for its parent (the agent) to reap it.
    static func isGone(_ pid: Int32) -> Bool {
        guard let stat = ProcFile.read("/proc/\(pid)/stat") else { return true }
        // "pid (comm) S ...": the state follows the last ')' (comm may itself contain one).
        guard let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("Z")
    }

    /// Cuts host `index` off the switch: its port's link goes down on the switch side (the host's own link and
    /// routes stay up, so healing is only the link coming back).
    func cut(host index: Int) async throws {
        try await Self.ip(["-n", switchNamespace, "link", "set", "h\(index)", "down"])
    }

    func heal(host index: Int) async throws {
        try await Self.ip(["-n", switchNamespace, "link", "set", "h\(index)", "up"])
    }
}
