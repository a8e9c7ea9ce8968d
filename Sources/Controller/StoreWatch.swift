import ClusterStore
import DequeModule
import Synchronization

/// What a watcher of the store receives, in apply order.
enum StoreEvent: Sendable, Hashable {
    /// The rows one applied command changed (never empty).
    case changes([StoreChange])
    /// The state was replaced wholesale (a snapshot was installed) or this watcher fell too far behind:
    /// read the state afresh instead of relying on earlier events.
    case reset
}

/// Fans the store's changes out to the leader's control loops (the node monitor, the orchestrator), the way a
/// Kubernetes informer or a Swarm watch queue does. Publishing never blocks Raft's apply: each watcher has
/// a bounded queue, and a watcher that falls behind gets its queue replaced by one `.reset`, so it re-reads
/// the state rather than act on an incomplete history.
final class StoreWatch: Sendable {
    static let queueLimit = 10_000

    private struct Watcher {
        var queue: Deque<StoreEvent> = []
        var waiter: CheckedContinuation<StoreEvent?, Never>?
        var cancelled = false
    }

    private struct State {
        var nextID = 0
        var watchers: [Int: Watcher] = [:]
    }

    private let state = Mutex(State())

    /// A new watcher that sees every event published from now on.
    func subscribe() -> Subscription {
        let id = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.watchers[id] = Watcher()
            return id
        }
        return Subscription(watch: self, token: Token(watch: self, id: id))
    }

    func publish(_ event: StoreEvent) {
        if case .changes(let changes) = event, changes.isEmpty { return }
        let wake: [(CheckedContinuation<StoreEvent?, Never>, StoreEvent)] = state.withLock { state in
            var wake: [(CheckedContinuation<StoreEvent?, Never>, StoreEvent)] = []
            for id in state.watchers.keys {
                if let waiter = state.watchers[id]!.waiter {
                    state.watchers[id]!.waiter = nil
                    wake.append((waiter, event))
                } else if state.watchers[id]!.queue.count >= Self.queueLimit {
                    state.watchers[id]!.queue = [.reset]
                } else {
                    state.watchers[id]!.queue.append(event)
                }
            }
            return wake
        }
        for (waiter, event) in wake { waiter.resume(returning: event) }
    }

    /// Watchers currently subscribed (tests, metrics).
    var watcherCount: Int { state.withLock { $0.watchers.count } }

    fileprivate func next(_ id: Int) async -> StoreEvent? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<StoreEvent?, Never>) in
                let immediate: StoreEvent?? = state.withLock { state in
                    guard let watcher = state.watchers[id], !watcher.cancelled else { return .some(nil) }
                    if let event = state.watchers[id]!.queue.popFirst() { return .some(event) }
                    state.watchers[id]!.waiter = continuation
                    return .none
                }
                if case .some(let event) = immediate { continuation.resume(returning: event) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<StoreEvent?, Never>? in
                state.watchers[id]?.cancelled = true
                let waiter = state.watchers[id]?.waiter
                state.watchers[id]?.waiter = nil
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    fileprivate func unsubscribe(_ id: Int) {
        let waiter = state.withLock { $0.watchers.removeValue(forKey: id)?.waiter }
        waiter?.resume(returning: nil)
    }

    /// Ends the watcher when the last copy of its subscription goes away.
    fileprivate final class Token: Sendable {
        let watch: StoreWatch
        let id: Int
        init(watch: StoreWatch, id: Int) {
            self.watch = watch
            self.id = id
        }
        deinit { watch.unsubscribe(id) }
    }

    /// One watcher's events, as an async sequence that ends when its task is cancelled.
    struct Subscription: AsyncSequence, Sendable {
        typealias Element = StoreEvent
        fileprivate let watch: StoreWatch
        fileprivate let token: Token

        struct AsyncIterator: AsyncIteratorProtocol {
            fileprivate let token: Token
            mutating func next() async -> StoreEvent? { await token.watch.next(token.id) }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(token: token) }
    }
}
