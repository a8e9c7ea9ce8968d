import ContainerRuntime
import Foundation
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Faults a lab injects: a container's processes killed or stopped, a host's process killed, paused or restarted,
/// a host cut off the switch, one link between two hosts cut one way or both.
extension NetnsLab {
    /// The host of agent node `name` ("n3" runs on host 3).
    func hostIndex(ofNode name: String) throws -> Int {
        guard name.hasPrefix("n"), let index = Int(name.dropFirst()), agentHosts.contains(index) else {
            throw ChildProcessError("\(name) is not an agent node of this lab (n\(agentHosts.lowerBound)...n\(hosts))")
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

    // MARK: - Processes

    /// SIGKILLs host `index`'s process (its controller or agent) and waits until it is gone.
    func killProcess(host index: Int, in cluster: Cluster) async throws {
        guard let entry = cluster.byHost[index] else { throw ChildProcessError("host \(index) runs no process of this lab") }
        await entry.process.stop(signal: SIGKILL, grace: .seconds(5))
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) host `index`'s process.
    func signal(_ signal: Int32, host index: Int, in cluster: Cluster) throws {
        guard let entry = cluster.byHost[index], entry.process.isRunning else { throw ChildProcessError("host \(index)'s process is not running") }
        guard Glibc.kill(entry.process.pid, signal) == 0 else { throw ChildProcessError("kill(\(entry.process.pid), \(signal)) failed") }
    }

    /// Starts host `index`'s process again from its data directory (after `kill`, or a clean stop).
    func restart(host index: Int, in cluster: Cluster) throws {
        guard let entry = cluster.byHost[index] else { throw ChildProcessError("host \(index) runs no process of this lab") }
        guard !entry.process.isRunning else { throw ChildProcessError("host \(index)'s process still runs; kill it first") }
        try launch(cluster, host: index, entry.restart, restart: entry.restart)
    }

    // MARK: - Links

    /// Drops every packet host `from` sends to host `to` (nftables, in `from`'s namespace): the link is cut one
    /// way. Cut both ways with two calls.
    func cutLink(from: Int, to: Int) async throws {
        try await nft(in: from, ["add", "table", "inet", "flotilla_fault"])
        try await nft(in: from, ["add", "chain", "inet", "flotilla_fault", "out", "{ type filter hook output priority 0 ; }"])
        try await nft(in: from, ["add", "rule", "inet", "flotilla_fault", "out", "ip", "daddr", address(to), "drop"])
    }

    /// Heals every link `cutLink` cut from host `index`.
    func healLinks(from index: Int) async throws {
        try await nft(in: index, ["delete", "table", "inet", "flotilla_fault"])
    }

    private func nft(in index: Int, _ arguments: [String]) async throws {
        let result = try await ChildProcess.run("/usr/sbin/ip", ["netns", "exec", host(index), "nft"] + arguments)
        guard result.status == 0 else { throw ChildProcessError("nft \(arguments.joined(separator: " ")) in host \(index): \(result.stderr)") }
    }
}
