import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The plain-process driver: a task is `/bin/sh -c COMMAND ARGS…` on the host, in its own process group, with
/// the service's environment plus `PORT` (a free port the agent picked for the task's first port) and
/// `FLOTILLA_TASK_ID`. Stopping sends SIGTERM to the group, then SIGKILL after the grace period.
public final class ProcessDriver: ContainerRuntime {
    public let name = "process"
    /// Where each task gets a cgroup of its own with its limits (`PARENT/proc-TASK`), when the agent can make
    /// one; nil: tasks run in the agent's cgroup.
    public let cgroupParent: String?
    /// Where its counters are read (the real hierarchies but in tests).
    let usage: CgroupUsage
    /// Each running task's cgroup path (relative to the hierarchies), by the pid of its handle.
    private let cgroupPaths = Mutex<[Int32: String]>([:])

    public init(cgroupParent: String? = nil, usage: CgroupUsage = CgroupUsage()) {
        self.cgroupParent = cgroupParent
        self.usage = usage
    }

    /// CPU and memory of a task in a cgroup of its own; nil for one without (it shares the agent's).
    public func stats(_ handle: RuntimeHandle) -> TaskStats? {
        guard let path = cgroupPaths.withLock({ $0[handle.pid] }) else { return nil }
        return usage.stats(ofCgroup: path)
    }

    public func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (TaskExit) -> Void) async throws -> RuntimeHandle {
        let name = "proc-" + launch.taskID
        let cgroup = cgroupParent.flatMap { ProcessCgroup.create(parent: $0, name: name, resources: launch.spec.resources) }
        // The pid is known only after the spawn, and the task may end before that: whichever comes second
        // settles whether its cgroup is listed.
        let spawned = SpawnedTask()
        let pid = try start(
            taskID: launch.taskID, command: launch.spec.command, args: launch.spec.args, environment: launch.environment,
            port: launch.port, output: launch.output, joining: cgroup?.directories.map { $0 + "/cgroup.procs" } ?? []
        ) { status in
            let oomKilled = (cgroup?.oomKills ?? 0) > 0
            if let pid = spawned.exited() { self.cgroupPaths.withLock { $0[pid] = nil } }
            cgroup?.remove()
            onExit(TaskExit(status: status, oomKilled: oomKilled))
        }
        cgroup?.add(pid)
        if cgroup != nil, let parent = cgroupParent {
            spawned.started(pid) { cgroupPaths.withLock { $0[pid] = "\(parent)/\(name)" } }
        }
        return RuntimeHandle(runtime: self.name, pid: pid)
    }

    /// Starts the task; `onExit` runs once with its exit status when it ends (for whatever reason). In its own
    /// process group, so a stop reaches whatever it started. Its stdout and stderr go to `output` (or nowhere).
    /// `joining`: `cgroup.procs` files the shell writes its own pid to before it runs the command, so the command
    /// and everything it forks are in the task's cgroup from the start.
    public func start(
        taskID: String, command: String, args: [String], environment: [String: String], port: Int?,
        output: TaskOutput? = nil, joining cgroups: [String] = [], onExit: @escaping @Sendable (Int32) -> Void
    ) throws -> Int32 {
        // "$0" is the command's name for the shell; "$@" the arguments after it.
        let join = cgroups.map { "echo $$ > '\($0)' 2>/dev/null; " }.joined()
        let argv = ["/bin/sh", "-c", join + (args.isEmpty ? command : command + " \"$@\""), "flotilla-task"] + args
        let envp = Self.environment(taskID: taskID, environment, port: port)
        return try HostProcess.spawn("/bin/sh", argv, environment: envp, streams: output, newProcessGroup: true, onExit: onExit)
    }

    /// A command beside the task, on the host, with the task's environment (a health check).
    public func exec(_ handle: RuntimeHandle, launch: TaskLaunch, command: [String], timeout: Duration) async throws -> Int32 {
        guard let first = command.first else { throw DriverError("the command is empty") }
        // Not a path: found on PATH by env(1), as a shell would.
        let (path, arguments) = first.contains("/") ? (first, Array(command.dropFirst())) : ("/usr/bin/env", command)
        let environment = Self.environment(taskID: launch.taskID, launch.environment, port: launch.port)
        return try await HostProcess.run(path, arguments, environment: environment, timeout: timeout).status
    }

    /// The agent's PATH, HOME and LANG, then the service's variables, FLOTILLA_TASK_ID and PORT.
    static func environment(taskID: String, _ variables: [String: String], port: Int?) -> [String] {
        var env = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME", "LANG"].contains($0.key) }
        for (key, value) in variables { env[key] = value }
        env["FLOTILLA_TASK_ID"] = taskID
        if let port { env["PORT"] = String(port) }
        return env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    /// SIGTERM to the task's process group; SIGKILL to the group if it is still there after `grace`.
    public func stop(_ handle: RuntimeHandle, grace: Duration, exited: @Sendable () async -> Bool) async {
        _ = kill(-handle.pid, SIGTERM)
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline {
            if await exited() { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
        _ = kill(-handle.pid, SIGKILL)
    }

    /// A free TCP port on this host (bound and released; the task binds it next).
    public static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = INADDR_ANY
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { return nil }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct DriverError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Whether a task's start or its exit came first (each is seen once).
private final class SpawnedTask: Sendable {
    private let state = Mutex<(pid: Int32?, exited: Bool)>((nil, false))

    /// The task ended: its pid when the start was already seen.
    func exited() -> Int32? {
        state.withLock { state in
            state.exited = true
            return state.pid
        }
    }

    /// The task was spawned as `pid`: runs `ifRunning` unless it already ended (under the lock, so an exit
    /// waits for it).
    func started(_ pid: Int32, ifRunning: () -> Void) {
        state.withLock { state in
            state.pid = pid
            if !state.exited { ifRunning() }
        }
    }
}
