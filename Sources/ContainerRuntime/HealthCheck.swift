import Foundation
public import Messages
import NIOCore
import NIOHTTP1
import NIOPosix

/// Judges a task's health from its check results, as Docker and Swarm do: the first success makes a starting
/// task healthy; `retries` consecutive failures make it unhealthy, except that failures within the start
/// period do not count until the task has been healthy once. A later success makes it healthy again (what a
/// readiness check needs; a liveness check's task is restarted when it turns unhealthy).
public struct HealthJudge: Sendable {
    public enum Verdict: Sendable, Equatable {
        case healthy
        case unhealthy
    }

    public let retries: Int
    public let startPeriod: Duration
    /// The last verdict given; nil until the first.
    public private(set) var verdict: Verdict?
    public private(set) var consecutiveFailures = 0
    /// Whether a check has ever passed (the start period no longer forgives failures after).
    public private(set) var wasHealthy = false

    public init(retries: Int, startPeriod: Duration) {
        self.retries = max(1, retries)
        self.startPeriod = startPeriod
    }

    /// Folds in one check's result, `sinceStart` after the task started; returns a verdict when it changes.
    public mutating func record(success: Bool, sinceStart: Duration) -> Verdict? {
        if success {
            consecutiveFailures = 0
            wasHealthy = true
            return change(to: .healthy)
        }
        if !wasHealthy && sinceStart < startPeriod { return nil }
        consecutiveFailures += 1
        return consecutiveFailures >= retries ? change(to: .unhealthy) : nil
    }

    private mutating func change(to new: Verdict) -> Verdict? {
        guard verdict != new else { return nil }
        verdict = new
        return new
    }

    /// How long to wait before the next check: quickly (at most 1 s) until the task is first healthy, so a
    /// new task becomes ready soon after it is, then at the configured interval.
    public func nextDelay(interval: Duration) -> Duration {
        wasHealthy ? interval : min(interval, .seconds(1))
    }
}

/// One check of a running task: a command where the task runs (`exec`: on the host for the process driver,
/// inside the container for the OCI driver), an HTTP GET on its first port, or a TCP connection to it.
public struct HealthProbe: Sendable {
    public let check: Flotilla_V1_HealthCheck
    /// The task's first port and the address it is reached on ("127.0.0.1" on the host's network, the
    /// container's address on its own); port nil: it has none.
    public let host: String
    public let port: Int?
    /// Runs a command where the task runs; its exit status.
    public typealias Exec = @Sendable (_ command: [String], _ timeout: Duration) async throws -> Int32

    public init(check: Flotilla_V1_HealthCheck, host: String = "127.0.0.1", port: Int?) {
        self.check = check
        self.host = host
        self.port = port
    }

    /// The outcome and, on failure, why.
    public func run(exec: Exec) async -> (healthy: Bool, reason: String) {
        let timeout = Duration.milliseconds(Int(max(check.timeoutMs, 1)))
        if !check.httpPath.isEmpty || check.tcp {
            guard let port else { return (false, "the task has no port to check") }
            return check.tcp
                ? await Self.tcpConnect(host: host, port: port, timeout: timeout)
                : await Self.httpGet(host: host, port: port, path: check.httpPath, timeout: timeout)
        }
        guard !check.command.isEmpty else { return (false, "the health check has no command") }
        do {
            let status = try await exec(check.command, timeout)
            return status == 0 ? (true, "") : (false, "the health check command exited with status \(status)")
        } catch let timedOut as HostProcess.TimedOut {
            return (false, "the health check command \(timedOut)")
        } catch {
            return (false, "could not run the health check: \(error)")
        }
    }

    /// A TCP connection to `host`:`port`; accepted is healthy.
    public static func tcpConnect(host: String, port: Int, timeout: Duration) async -> (healthy: Bool, reason: String) {
        let outcome = await withTimeout(timeout) { () async -> Error? in
            do {
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(TimeAmount(timeout))
                    .connect(host: host, port: port).get()
                try? await channel.close()
                return nil
            } catch {
                return error
            }
        }
        switch outcome {
        case .none: return (false, "connecting to \(host):\(port) timed out after \(timeout)")
        case .some(.some(let error)): return (false, "connecting to \(host):\(port) failed: \(error)")
        case .some(.none): return (true, "")
        }
    }

    /// GET `path` on `host`:`port`; 2xx and 3xx are healthy.
    public static func httpGet(host: String = "127.0.0.1", port: Int, path: String, timeout: Duration) async -> (healthy: Bool, reason: String) {
        let outcome = await withTimeout(timeout) { () async -> Result<UInt, Error> in
            do {
                return .success(try await statusCode(host: host, port: port, path: path, timeout: timeout))
            } catch {
                return .failure(error)
            }
        }
        switch outcome {
        case .none: return (false, "GET \(path) on \(host):\(port) timed out after \(timeout)")
        case .failure(let error): return (false, "GET \(path) on \(host):\(port) failed: \(error)")
        case .success(let code) where (200..<400).contains(code): return (true, "")
        case .success(let code): return (false, "GET \(path) on \(host):\(port) answered \(code)")
        }
    }

    private static func statusCode(host: String, port: Int, path: String, timeout: Duration) async throws -> UInt {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(TimeAmount(timeout))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            var headers = HTTPHeaders()
            headers.add(name: "Host", value: "\(host):\(port)")
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
