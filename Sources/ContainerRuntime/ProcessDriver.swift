import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The plain-process driver: a task is `/bin/sh -c COMMAND ARGS…` on the host, in its own process group, with
/// the service's environment plus `PORT` (a free port the agent picked for the task's first port) and
/// `FLOTILLA_TASK_ID`. Stopping sends SIGTERM to the group, then SIGKILL after the grace period.
public final class ProcessDriver: ContainerRuntime {
    public let name = "process"

    public init() {}

    public func start(_ launch: TaskLaunch, onExit: @escaping @Sendable (Int32) -> Void) throws -> RuntimeHandle {
        let pid = try start(
            taskID: launch.taskID, command: launch.spec.command, args: launch.spec.args, environment: launch.environment,
            port: launch.port, onExit: onExit)
        return RuntimeHandle(runtime: name, pid: pid)
    }

    /// Starts the task; `onExit` runs once with its exit status when it ends (for whatever reason).
    ///
    /// Spawned with posix_spawn so the child gets what Foundation's Process cannot give it: its own process
    /// group (so a stop reaches whatever it started) and SIGTERM/SIGINT back at their default action (the
    /// agent ignores them to handle them itself, and ignored signals survive exec).
    public func start(
        taskID: String, command: String, args: [String], environment: [String: String], port: Int?,
        onExit: @escaping @Sendable (Int32) -> Void
    ) throws -> Int32 {
        var env = ProcessInfo.processInfo.environment.filter { ["PATH", "HOME", "LANG"].contains($0.key) }
        for (key, value) in environment { env[key] = value }
        env["FLOTILLA_TASK_ID"] = taskID
        if let port { env["PORT"] = String(port) }
        // "$0" is the command's name for the shell; "$@" the arguments after it.
        let argv = ["/bin/sh", "-c", args.isEmpty ? command : command + " \"$@\"", "flotilla-task"] + args
        let envp = env.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY, 0)
        }

        var pid: pid_t = 0
        let result = withCStrings(argv) { argvPointers in
            withCStrings(envp) { envPointers in
                posix_spawn(&pid, "/bin/sh", &actions, &attributes, argvPointers, envPointers)
            }
        }
        guard result == 0 else {
            throw DriverError("could not start /bin/sh for task \(taskID): \(String(cString: strerror(result)))")
        }
        // One reaper thread per task: waitpid blocks, so it stays off the Swift concurrency pool.
        let child = pid
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) == -1 && errno == EINTR {}
            let exitCode = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            onExit(exitCode)
        }
        return pid
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

/// Runs `body` with a NULL-terminated array of C strings (argv/envp), valid for the call only.
private func withCStrings<T>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> T) -> T {
    var pointers = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return body(pointers)
}
