public import Foundation
import Synchronization

/// Where the built `flotilla*` executables are: $FLOTILLA_BIN_DIR (scripts/test.sh sets it), else the
/// package's debug build directory.
public enum FlotillaBinaries {
    public static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["FLOTILLA_BIN_DIR"], !dir.isEmpty { return dir }
        // Sources/TestSupport/ChildProcess.swift -> package root
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug").path
    }

    public static func path(_ name: String) throws -> String {
        let path = directory + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw ChildProcessError("no executable at \(path); build first (scripts/test.sh does) or set FLOTILLA_BIN_DIR")
        }
        return path
    }
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A process started by a test, with its output captured to files. `stop()` ends it by its PID; tests call
/// it in every path (also on failure), so nothing outlives the test.
public final class ChildProcess: Sendable {
    public let pid: Int32
    private let process: Mutex<Process?>
    private let stdoutPath: String
    private let stderrPath: String

    /// Starts `executable` with `arguments`.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-child-\(UUID().uuidString)").path
        stdoutPath = base + ".out"
        stderrPath = base + ".err"
        FileManager.default.createFile(atPath: stdoutPath, contents: nil)
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardInput = FileHandle.nullDevice
        try process.run()
        pid = process.processIdentifier
        self.process = Mutex(process)
        Self.recordForCleanup(pid)
    }

    /// Appends `pid` to $FLOTILLA_TEST_PIDFILE (scripts/test.sh sets it), so that if the test process itself
    /// dies, the script still ends every child it started — by PID, nothing else.
    private static func recordForCleanup(_ pid: Int32) {
        guard let path = ProcessInfo.processInfo.environment["FLOTILLA_TEST_PIDFILE"], !path.isEmpty,
              let handle = FileHandle(forWritingAtPath: path) else { return }
        handle.seekToEndOfFile()
        handle.write(Data("\(pid)\n".utf8))
        try? handle.close()
    }

    public var standardOutput: String { (try? String(contentsOfFile: stdoutPath, encoding: .utf8)) ?? "" }
    public var standardError: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
    public var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    /// Waits for the process to exit by itself, up to `timeout`; returns its exit status or nil.
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !isRunning { return process.withLock { $0?.terminationStatus } }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Sends `signal` (SIGTERM by default), waits up to `grace`, then SIGKILLs. Removes the output files.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, grace: Duration = .seconds(10)) async -> Int32? {
        if isRunning {
            kill(pid, signal)
            let status = try? await waitForExit(timeout: grace)
            if status == nil, isRunning {
                kill(pid, SIGKILL)
                _ = try? await waitForExit(timeout: .seconds(5))
            }
        }
        return process.withLock { $0?.isRunning == false ? $0?.terminationStatus : nil }
    }

    /// The captured output goes with the object (a test reads it while it holds the process).
    deinit { removeOutput() }

    /// Deletes the captured output (call after the test has read it).
    public func removeOutput() {
        try? FileManager.default.removeItem(atPath: stdoutPath)
        try? FileManager.default.removeItem(atPath: stderrPath)
    }

    /// Runs a command to completion and returns (status, stdout, stderr).
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        timeout: Duration = .seconds(60)
    ) async throws -> (status: Int32, stdout: String, stderr: String) {
        let child = try ChildProcess(executable, arguments, environment: environment)
        defer { child.removeOutput() }
        guard let status = try await child.waitForExit(timeout: timeout) else {
            await child.stop(signal: SIGKILL)
            throw ChildProcessError("\(executable) \(arguments.joined(separator: " ")) did not finish within \(timeout)")
        }
        return (status, child.standardOutput, child.standardError)
    }
}
