import Foundation
public import Messages
import NIOCore
import NIOHTTP1
import NIOPosix

/// Judges a task's health from its check results, as Docker and Swarm do: the first success makes a starting
/// task healthy; `retries` consecutive failures make it unhealthy, except that failures within the start
/// period do not count until the task has been healthy once.
public struct HealthJudge: Sendable {
    public enum Verdict: Sendable, Equatable {
        case healthy
        case unhealthy
    }

    public let retries: Int
    public let startPeriod: Duration
    public private(set) var everHealthy = false
    public private(set) var consecutiveFailures = 0

    public init(retries: Int, startPeriod: Duration) {
        self.retries = max(1, retries)
        self.startPeriod = startPeriod
    }

    /// Folds in one check's result, `sinceStart` after the task started; returns a verdict when it changes.
    public mutating func record(success: Bool, sinceStart: Duration) -> Verdict? {
        if success {
            consecutiveFailures = 0
            defer { everHealthy = true }
            return everHealthy ? nil : .healthy
        }
        if !everHealthy && sinceStart < startPeriod { return nil }
        consecutiveFailures += 1
        return consecutiveFailures == retries ? .unhealthy : nil
    }

    /// How long to wait before the next check: quickly (at most 1 s) until the task is first healthy, so a
    /// new task becomes ready soon after it is, then at the configured interval.
    public func nextDelay(interval: Duration) -> Duration {
        everHealthy ? interval : min(interval, .seconds(1))
    }
}

/// One health check of a running task: the spec's command (on the host, with the task's environment), or an
/// HTTP GET on the task's port.
public struct HealthProbe: Sendable {
    public let check: Flotilla_V1_HealthCheck
    public let taskID: String
    public let port: Int?
    public let environment: [String: String]

    public init(check: Flotilla_V1_HealthCheck, taskID: String, port: Int?, environment: [String: String]) {
        self.check = check
        self.taskID = taskID
        self.port = port
        self.environment = environment
    }

    /// The outcome and, on failure, why.
    public func run(driver: ProcessDriver) async -> (healthy: Bool, reason: String) {
        let timeout = Duration.milliseconds(Int(check.timeoutMs))
        if !check.httpPath.isEmpty {
            guard let port else { return (false, "the task has no port to check") }
            return await Self.httpGet(port: port, path: check.httpPath, timeout: timeout)
        }
        return await runCommand(driver: driver, timeout: timeout)
    }

    private func runCommand(driver: ProcessDriver, timeout: Duration) async -> (healthy: Bool, reason: String) {
        guard let first = check.command.first else { return (false, "the health check has no command") }
        let exit = AsyncStream<Int32>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let pid: Int32
        do {
            pid = try driver.start(
                taskID: taskID, command: first, args: Array(check.command.dropFirst()), environment: environment, port: port
            ) { status in
                exit.continuation.yield(status)
                exit.continuation.finish()
            }
        } catch {
            return (false, "could not run the health check: \(error)")
        }
        let status = await withTimeout(timeout) { await exit.stream.first { _ in true } } ?? nil
        guard let status else {
            _ = kill(-pid, SIGKILL)
            return (false, "the health check command timed out after \(timeout)")
        }
        return status == 0 ? (true, "") : (false, "the health check command exited with status \(status)")
    }

    /// GET `path` on 127.0.0.1:`port`; 2xx and 3xx are healthy.
    public static func httpGet(port: Int, path: String, timeout: Duration) async -> (healthy: Bool, reason: String) {
        let outcome = await withTimeout(timeout) { () async -> Result<UInt, Error> in
            do {
                return .success(try await statusCode(port: port, path: path, timeout: timeout))
            } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case .none: return (false, "GET \(path) on port \(port) timed out after \(timeout)")
        case .failure(let error): return (false, "GET \(path) on port \(port) failed: \(error)")
        case .success(let code) where (200..<400).contains(code): return (true, "")
        case .success(let code): return (false, "GET \(path) on port \(port) answered \(code)")
        }
    }

    private static func statusCode(port: Int, path: String, timeout: Duration) async throws -> UInt {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000))
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "127.0.0.1:\(port)")
            headers.add(name: "User-Agent", value: "flotilla-health-check")
            headers.add(name: "Connection", value: "close")
            try await outbound.write(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)))
            try await outbound.write(.end(nil))
            for try await part in inbound {
                if case .head(let head) = part { return head.status.code }
            }
            throw HealthCheckError("the connection closed before a response")
        }
    }
}

/// `operation`'s result, or nil when `limit` passes first (the operation is then cancelled).
func withTimeout<T: Sendable>(_ limit: Duration, _ operation: @escaping @Sendable () async -> T) async -> T? {
    await withTaskGroup(of: T?.self) { group in
        group.addTask { await operation() }
        group.addTask {
            try? await Task.sleep(for: limit)
            return nil
        }
        let first = await group.next() ?? nil
        group.cancelAll()
        return first
    }
}

struct HealthCheckError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
