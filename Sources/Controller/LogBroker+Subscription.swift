import ClusterModel
import Synchronization
import Transport
import Wire

extension LogBroker {
    /// One admin's log stream: the nodes asked for lines, how far each is, and the admin's writer that
    /// publishers write into (its flow control is the backpressure: a slow reader slows the agents).
    final class Subscription: Sendable {
        enum Progress: Sendable, Equatable {
            /// Asked on its session; its `PublishLogs` call has not come yet.
            case asked
            /// Its call is open.
            case publishing
        }

        let id: String
        let writer: ResponseWriter<Flotilla_V1_TaskLogsResponse>
        /// Node names by id, and the tasks each node was asked about (lines of other tasks are dropped).
        let nodeNames: [NodeID: String]
        let tasks: [NodeID: Set<String>]
        let changed = ChangeSignal()
        private let state = Mutex(State())

        private struct State {
            var pending: [NodeID: Progress] = [:]
            var notices: [String] = []
            var closed = false
        }

        init(id: String, writer: ResponseWriter<Flotilla_V1_TaskLogsResponse>, nodeNames: [NodeID: String], tasks: [NodeID: Set<String>]) {
            self.id = id
            self.writer = writer
            self.nodeNames = nodeNames
            self.tasks = tasks
        }

        func name(_ node: NodeID) -> String { nodeNames[node] ?? node.rawValue }

        /// The node was asked on its session.
        func asked(_ node: NodeID) {
            state.withLock { $0.pending[node] = .asked }
        }

        /// The node's publisher arrived; false when the node was not asked, already answered, or the stream ended.
        func opened(_ node: NodeID) -> Bool {
            let accepted = state.withLock { state -> Bool in
                guard !state.closed, state.pending[node] == .asked else { return false }
                state.pending[node] = .publishing
                return true
            }
            if accepted { changed.notify() }
            return accepted
        }

        /// The node has nothing more to send (with a notice when it ended badly).
        func finished(_ node: NodeID, notice: String? = nil) {
            state.withLock { state in
                guard state.pending.removeValue(forKey: node) != nil else { return }
                if let notice { state.notices.append(notice) }
            }
            changed.notify()
        }

        /// Nodes asked whose publisher has not arrived.
        var unopened: [NodeID] {
            state.withLock { $0.pending.filter { $0.value == .asked }.map(\.key) }
        }

        var isDone: Bool { state.withLock { $0.pending.isEmpty || $0.closed } }
        var isClosed: Bool { state.withLock { $0.closed } }

        func takeNotices() -> [String] {
            state.withLock { state in
                defer { state.notices = [] }
                return state.notices
            }
        }

        /// The admin's stream is over: publishers end their calls.
        func close() {
            state.withLock { $0.closed = true }
            changed.notify()
        }

        /// Waits until the stream is closed (or the caller is cancelled).
        func waitClosed() async {
            while !Task.isCancelled {
                let generation = changed.generation
                if isClosed { return }
                await changed.wait(after: generation)
            }
        }

        /// Writes a publisher's batch to the admin, each line tagged with its node; lines of tasks the node was
        /// not asked about are dropped.
        func deliver(_ publication: Flotilla_V1_LogPublication, from node: NodeID) async throws {
            let wanted = tasks[node] ?? []
            var response = Flotilla_V1_TaskLogsResponse()
            let name = name(node)
            response.lines = publication.lines.filter { wanted.contains($0.taskID) }.map { line in
                var line = line
                line.nodeID = node.rawValue
                line.nodeName = name
                return line
            }
            response.notices = publication.notices.map { "node \(name): \($0)" }
            guard !response.lines.isEmpty || !response.notices.isEmpty else { return }
            try await writer.write(response)
        }
    }
}

/// Wakes waiters when something changed: a generation counter and the continuations of those waiting for it to
/// move. Waiting ends early when the waiter is cancelled.
final class ChangeSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
        var nextKey = 0
    }

    private let state = Mutex(State())

    var generation: UInt64 { state.withLock { $0.generation } }

    func notify() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.generation += 1
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the generation is past `generation`, or the caller is cancelled.
    func wait(after generation: UInt64) async {
        let key = state.withLock { state -> Int in
            state.nextKey += 1
            return state.nextKey
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    guard state.generation == generation, !Task.isCancelled else { return true }
                    state.waiters[key] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: key) }?.resume()
        }
    }

    /// `wait(after:)` for at most `timeout`.
    func wait(after generation: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.wait(after: generation) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }
}
