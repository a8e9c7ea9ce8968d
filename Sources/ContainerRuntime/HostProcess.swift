import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Starting and reaping host processes for the drivers: posix_spawn gives the child what Foundation's Process
/// cannot, namely SIGTERM/SIGINT back at their default action (the agent ignores them to handle them itself,
/// and ignored signals survive exec) and, when asked, a process group of its own.
enum HostProcess {
    /// Spawns `path` with `argv` (argv[0] included) and `environment` ("NAME=value"); stdin from /dev/null,
    /// stdout and stderr appended to `output` (or /dev/null), or, with `streams`, to the task's log FIFOs (opened
    /// read-write, so a write never fails for want of a reader). `onExit` runs once, on a thread of its own,
    /// with the exit status (128 + signal when killed by one).
    static func spawn(
        _ path: String, _ argv: [String], environment: [String], output: String? = nil, streams: TaskOutput? = nil,
        newProcessGroup: Bool, onExit: @escaping @Sendable (Int32) -> Void
    ) throws -> Int32 {
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
        var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
        if newProcessGroup {
            posix_spawnattr_setpgroup(&attributes, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0)
        if let streams {
            posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, streams.stdout, O_RDWR, 0)
            posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, streams.stderr, O_RDWR, 0)
        } else {
            let sink = output ?? "/dev/null"
            posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, sink, O_WRONLY | O_CREAT | O_APPEND, 0o640)
            posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO)
        }

        var pid: pid_t = 0
        let result = withCStrings(argv) { argvPointers in
            withCStrings(environment) { envPointers in
                posix_spawn(&pid, path, &actions, &attributes, argvPointers, envPointers)
            }
        }
        guard result == 0 else {
            throw DriverError("could not start \(path): \(String(cString: strerror(result)))")
        }
        // One reaper thread per child: waitpid blocks, so it stays off the Swift concurrency pool.
        let child = pid
        Thread.detachNewThread {
            var status: Int32 = 0
            while waitpid(child, &status, 0) == -1 && errno == EINTR {}
            onExit((status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F))
        }
        return pid
    }

    /// Runs `path` with `arguments` (in a process group of its own) to completion; its exit status and what it
    /// printed (stdout and stderr; empty when appended to `output`, a file the caller keeps, or written to
    /// `streams`, a task's log FIFOs). `environment`:
    /// "NAME=value" entries, the agent's own when nil. Throws `TimedOut` when `timeout` passes first, after
    /// killing the process group.
    static func run(
        _ path: String, _ arguments: [String], environment: [String]? = nil, appendingTo output: String? = nil,
        streams: TaskOutput? = nil, timeout: Duration? = nil
    ) async throws -> (status: Int32, output: String) {
        let capture = output ?? FileManager.default.temporaryDirectory.path + "/flotilla-run-\(UUID().uuidString).log"
        defer { if output == nil { try? FileManager.default.removeItem(atPath: capture) } }
        let exit = AsyncStream<Int32>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let environment = environment ?? ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        let pid = try spawn(path, [path] + arguments, environment: environment, output: capture, streams: streams, newProcessGroup: true) { status in
            exit.continuation.yield(status)
            exit.continuation.finish()
        }
        let waited: Int32?? = if let timeout {
            await withTimeout(timeout) { await exit.stream.first { _ in true } }
        } else {
            .some(await exit.stream.first { _ in true })
        }
        guard case .some(let status) = waited else {
            _ = kill(-pid, SIGKILL)
            throw TimedOut(command: ([path] + arguments).joined(separator: " "), limit: timeout ?? .zero)
        }
        let text = output == nil ? (try? String(contentsOfFile: capture, encoding: .utf8)) ?? "" : ""
        return (status ?? -1, text.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A command that did not finish in time (and was killed).
    struct TimedOut: Error, CustomStringConvertible {
        let command: String
        let limit: Duration
        var description: String { "timed out after \(limit)" }
    }
}

extension HostProcess {
    /// Runs `path` with `arguments` to completion on the calling thread, output appended to `output`; its exit
    /// status. For synchronous callers (a driver's start); async code uses `run`.
    static func runBlocking(_ path: String, _ arguments: [String], output: String?) throws -> Int32 {
        let done = DispatchSemaphore(value: 0)
        let result = StatusBox()
        let environment = ProcessInfo.processInfo.environment.map { "\($0.key)=\($0.value)" }
        _ = try spawn(path, [path] + arguments, environment: environment, output: output, newProcessGroup: true) { status in
            result.set(status)
            done.signal()
        }
        done.wait()
        return result.get()
    }
}

/// One exit status handed between threads.
private final class StatusBox: @unchecked Sendable {
    private let lock = NSLock()
    private var status: Int32 = -1
    func set(_ value: Int32) { lock.withLock { status = value } }
    func get() -> Int32 { lock.withLock { status } }
}

/// Runs `body` with a NULL-terminated array of C strings (argv/envp), valid for the call only.
private func withCStrings<T>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) -> T) -> T {
    var pointers = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return body(pointers)
}
