// Servers run in child processes of the client (each side gets its own process, as in production).
// A child serves until its standard input closes (the parent closing the pipe, or dying) or until
// --max-seconds pass, whichever comes first.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Returns when standard input reaches end of file or `maxSeconds` pass.
func waitForStdinEOF(maxSeconds: Double) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        Thread.detachNewThread {
            let deadline = monotonicNanos() + UInt64(maxSeconds * 1e9)
            var buffer = [UInt8](repeating: 0, count: 256)
            while monotonicNanos() < deadline {
                var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
                let ready = poll(&pfd, 1, 500)
                if ready < 0 && errno != EINTR { break }
                if ready > 0 {
                    let n = read(0, &buffer, buffer.count)
                    if n <= 0 { break }  // EOF or error
                }
            }
            continuation.resume()
        }
    }
}

/// A server child process: started with `subcommand`, reports its port on stdout as "PORT <n>".
final class ServerProcess: @unchecked Sendable {
    let name: String
    let process: Process
    let port: Int
    private let stdin: Pipe

    var pid: Int32 { process.processIdentifier }

    init(
        name: String, subcommand: String, credentialsPath: String, maxSeconds: Double, extraArguments: [String] = []
    ) throws {
        self.name = name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try selfExecutablePath())
        process.arguments = [subcommand, "--credentials", credentialsPath, "--max-seconds", String(maxSeconds)] + extraArguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = FileHandle.standardError
        try process.run()
        self.process = process
        self.stdin = stdin

        // Read the first line: "PORT <n>".
        var line = Data()
        let reader = stdout.fileHandleForReading
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = reader.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("PORT "), let port = Int(text.dropFirst(5)) else {
            process.terminate()
            throw BenchError("\(name) server did not report its port (said: \(text.debugDescription))")
        }
        self.port = port
    }

    /// Closes the child's stdin (it shuts down gracefully) and waits up to 10 s, then SIGKILLs it.
    func stop() {
        try? stdin.fileHandleForWriting.close()
        let deadline = monotonicNanos() + 10_000_000_000
        while process.isRunning && monotonicNanos() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

func selfExecutablePath() throws -> String {
    #if os(Linux)
    return try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    #else
    return CommandLine.arguments[0]
    #endif
}
