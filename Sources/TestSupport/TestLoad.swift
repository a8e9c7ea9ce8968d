import ContainerRuntime
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Bounded HTTP load for cluster tests: `connections` client threads send `GET path` to their targets (thread i to
/// target i mod n) until `maxRequests` have been sent in all, `maxDuration` has passed or `stop()` is called,
/// whichever comes first. Every request is recorded for the test to judge.
///
/// A load may run inside a network namespace: `setns` moves only the calling thread, and a socket belongs to the
/// namespace of the thread that creates it, so each client thread enters the namespace first and every socket it
/// opens is that host's. The threads are the load's own and end with it; nothing else changes namespace.
public final class TestLoad: Sendable {
    public struct Target: Sendable, Hashable, CustomStringConvertible {
        public let host: String
        public let port: Int
        public init(_ host: String, _ port: Int) {
            self.host = host
            self.port = port
        }
        public var description: String { "\(host):\(port)" }
    }

    public enum Connections: Sendable {
        /// One kept-alive connection per thread, reopened after a failure.
        case keepAlive
        /// A new connection per request (`Connection: close`): a request's record also times its connection.
        case perRequest
    }

    /// One request: when it began (with `.perRequest`, when its connection began), when it ended, and the body of
    /// its 200 answer or what went wrong.
    public struct Record: Sendable {
        public let target: Target
        public let started: ContinuousClock.Instant
        public let ended: ContinuousClock.Instant
        public let answer: String?
        public let failure: String?
        public var latency: Duration { ended - started }
    }

    private struct State {
        var records: [Record] = []
        var sent = 0
        var running = 0
        var stopped = false
    }

    private let state = Mutex(State())
    private let maxRequests: Int
    private let deadline: ContinuousClock.Instant
    private let timeoutSeconds: Int

    /// Requests answered or failed so far.
    public var count: Int { state.withLock { $0.records.count } }
    /// Failed requests so far.
    public var failures: Int { state.withLock { $0.records.count { $0.failure != nil } } }

    private init(maxRequests: Int, maxDuration: Duration, timeoutSeconds: Int) {
        self.maxRequests = maxRequests
        self.deadline = .now + maxDuration
        self.timeoutSeconds = timeoutSeconds
    }

    /// Starts the client threads. `timeoutSeconds` bounds each connect, send and read (a request waiting longer
    /// fails). Throws if `namespace` (a name under /run/netns) cannot be opened.
    public static func start(
        targets: [Target], path: String = "/", connections: Int, style: Connections, namespace: String? = nil,
        maxRequests: Int, maxDuration: Duration, timeoutSeconds: Int = 15
    ) throws -> TestLoad {
        precondition(!targets.isEmpty && connections > 0)
        var namespaceFD: Int32 = -1
        if let namespace {
            namespaceFD = open("/run/netns/" + namespace, O_RDONLY | O_CLOEXEC)
            guard namespaceFD >= 0 else {
                throw ChildProcessError("cannot open /run/netns/\(namespace) (\(String(cString: strerror(errno)))); create it with `ip netns add`")
            }
        }
        let load = TestLoad(maxRequests: maxRequests, maxDuration: maxDuration, timeoutSeconds: timeoutSeconds)
        load.state.withLock { $0.running = connections }
        let entered = DispatchSemaphore(value: 0)
        for index in 0..<connections {
            let target = targets[index % targets.count]
            let fd = namespaceFD
            Thread {
                let inNamespace = fd < 0 || NetworkNamespace.enter(descriptor: fd)
                entered.signal()
                load.drive(target, path: path, style: style, inNamespace: inNamespace)
            }.start()
        }
        // Every thread has entered the namespace (or failed to) before the descriptor goes.
        for _ in 0..<connections { entered.wait() }
        if namespaceFD >= 0 { close(namespaceFD) }
        return load
    }

    /// Ends the load (requests in flight finish or time out) and returns every record, in order of completion.
    public func stop() async -> [Record] {
        state.withLock { $0.stopped = true }
        let limit = ContinuousClock.now + .seconds(3 * timeoutSeconds + 5)
        while state.withLock({ $0.running > 0 }) && ContinuousClock.now < limit {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return state.withLock { $0.records }
    }

    /// Waits until `count` more requests than now have completed (or the load has ended, or `timeout` passed).
    public func waitForRequests(_ more: Int, timeout: Duration = .seconds(30)) async {
        let goal = count + more
        let limit = ContinuousClock.now + timeout
        while count < goal && state.withLock({ $0.running > 0 }) && ContinuousClock.now < limit {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    /// One client thread's loop.
    private func drive(_ target: Target, path: String, style: Connections, inNamespace: Bool) {
        defer { state.withLock { $0.running -= 1 } }
        guard inNamespace else {
            let now = ContinuousClock.now
            let failure = "could not enter the network namespace: \(String(cString: strerror(errno)))"
            state.withLock { $0.records.append(Record(target: target, started: now, ended: now, answer: nil, failure: failure)) }
            return
        }
        let client = TestHTTPClient(host: target.host, port: target.port)
        while takeTurn() {
            let started = ContinuousClock.now
            var answer: String?
            var failure: String?
            do {
                let response = try client.request(path, close: style == .perRequest, timeoutSeconds: timeoutSeconds)
                let body = response.body.trimmingCharacters(in: .whitespacesAndNewlines)
                if response.status == 200 { answer = body } else { failure = "status \(response.status): \(body.prefix(200))" }
            } catch {
                failure = "\(error)"
            }
            let record = Record(target: target, started: started, ended: .now, answer: answer, failure: failure)
            state.withLock { $0.records.append(record) }
        }
        client.reset()
    }

    /// Whether this thread may send one more request (and counts it as sent).
    private func takeTurn() -> Bool {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard !state.stopped, state.sent < maxRequests, now < deadline else { return false }
            state.sent += 1
            return true
        }
    }
}

extension [TestLoad.Record] {
    /// Answers counted by body (for `httpd` serving its task id: requests per replica).
    public var answers: [String: Int] {
        reduce(into: [:]) { counts, record in if let answer = record.answer { counts[answer, default: 0] += 1 } }
    }

    public var failed: [TestLoad.Record] { filter { $0.failure != nil } }

    /// "N requests, F failed, per answer: a=1 b=2", answers cut to `prefix` characters.
    public func summary(prefix: Int = 8) -> String {
        let perAnswer = answers.sorted { $0.key < $1.key }.map { "\($0.key.prefix(prefix))=\($0.value)" }.joined(separator: " ")
        let slowest = map(\.latency).max() ?? .zero
        return "\(count) requests, \(failed.count) failed, slowest \(slowest), per answer: \(perAnswer)"
    }
}
