import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Reaps the processes a child subreaper adopts from containers. A process started by `<runtime> exec` (a
/// health check) whose runtime process died is reparented to the agent; when it exits it stays a zombie until
/// the agent waits for it, and an unreaped zombie in a container's PID namespace keeps that namespace, and so
/// the container, from ever finishing (its init waits for every process in it to be reaped).
///
/// Only children that live in another PID namespace and that no one tracks are reaped: the agent's own children
/// (drivers' processes, runtime commands, anything a library started) each have a waiter of their own, and a
/// `waitpid(-1)` here would steal their exit statuses.
enum OrphanReaper {
    /// Container processes some driver of this process waits for (every driver's: one driver must never reap
    /// another's container, whose exit status that driver's waiter would then lose).
    private static let tracked = Mutex<Set<Int32>>([])

    static func track(_ pid: Int32) { _ = tracked.withLock { $0.insert(pid) } }
    static func untrack(_ pid: Int32) { _ = tracked.withLock { $0.remove(pid) } }

    /// Reaps every adopted zombie; with `killing`, first sends SIGKILL to live adopted processes whose cgroup
    /// path contains it (what a timed-out check left running in a container). Returns how many it reaped.
    @discardableResult
    static func sweep(killing cgroupMarker: String? = nil) -> Int {
        let tracked = Self.tracked.withLock { $0 }
        let me = getpid()
        var reaped = 0
        for child in children(of: me) where !tracked.contains(child.pid) && inOtherPIDNamespace(child.pid) {
            if child.state == "Z" {
                var status: Int32 = 0
                if waitpid(child.pid, &status, WNOHANG) == child.pid { reaped += 1 }
            } else if let cgroupMarker, cgroup(of: child.pid).contains(cgroupMarker) {
                _ = kill(child.pid, SIGKILL)
            }
        }
        return reaped
    }

    struct Child {
        let pid: Int32
        let state: Character
    }

    /// The processes whose parent is `parent`, from /proc/PID/stat ("pid (comm) state ppid …"; comm may hold
    /// spaces and parentheses, so the fields are read after its last ')').
    static func children(of parent: Int32) -> [Child] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [Child] = []
        for entry in entries {
            guard let pid = Int32(entry), let stat = ProcFile.read("/proc/\(entry)/stat"),
                  let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, let state = fields[0].first, Int32(fields[1]) == parent else { continue }
            found.append(Child(pid: pid, state: state))
        }
        return found
    }

    /// Whether the process is also known by a pid in a nested namespace ("NSpid:" lists more than one).
    static func inOtherPIDNamespace(_ pid: Int32) -> Bool {
        guard let status = ProcFile.read("/proc/\(pid)/status"),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("NSpid:") }) else { return false }
        return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).count > 2
    }

    static func cgroup(of pid: Int32) -> String {
        ProcFile.read("/proc/\(pid)/cgroup") ?? ""
    }
}
