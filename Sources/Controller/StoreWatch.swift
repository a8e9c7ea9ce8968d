import ClusterStore
import Synchronization

/// What a watcher of the store receives, in apply order.
enum StoreEvent: Sendable, Hashable {
    /// The rows one applied command changed (never empty).
    case changes([StoreChange])
    /// The state was replaced wholesale (a snapshot was installed) or this watcher fell too far behind:
    /// read the state afresh instead of relying on earlier events.
    case reset
}

/// Fans the store's changes out to the leader's control loops (the node monitor, the orchestrator, the
/// dispatcher), the way a Kubernetes informer or a Swarm watch queue does. Publishing never blocks Raft's
/// apply: each watcher has a bounded mailbox, and a watcher that falls behind gets its backlog replaced by one
/// `.reset`, so it re-reads the state rather than act on an incomplete history.
final class StoreWatch: Sendable {
    static let queueLimit = 10_000

    private struct State {
        var nextID = 0
        var watchers: [Int: Mailbox<StoreEvent>] = [:]
    }

    private let state = Mutex(State())

    /// A new watcher that sees every event published from now on.
    func subscribe() -> Subscription {
        let mailbox = Mailbox<StoreEvent>(limit: Self.queueLimit)
        let id = state.withLock { state in
            let id = state.nextID
            state.nextID += 1
            state.watchers[id] = mailbox
            return id
        }
        return Subscription(token: Token(watch: self, id: id, mailbox: mailbox))
    }

    func publish(_ event: StoreEvent) {
        if case .changes(let changes) = event, changes.isEmpty { return }
        let watchers = state.withLock { Array($0.watchers.values) }
        for mailbox in watchers { mailbox.push(event, overflow: { .reset }) }
    }

    /// Watchers currently subscribed (tests, metrics).
    var watcherCount: Int { state.withLock { $0.watchers.count } }

    fileprivate func unsubscribe(_ id: Int) {
        state.withLock { $0.watchers.removeValue(forKey: id) }?.close()
    }

    /// Ends the watcher when the last copy of its subscription goes away.
    fileprivate final class Token: Sendable {
        let watch: StoreWatch
        let id: Int
        let mailbox: Mailbox<StoreEvent>
        init(watch: StoreWatch, id: Int, mailbox: Mailbox<StoreEvent>) {
            self.watch = watch
            self.id = id
            self.mailbox = mailbox
        }
        deinit { watch.unsubscribe(id) }
    }

    /// One watcher's events, as an async sequence that ends when its task is cancelled.
    struct Subscription: AsyncSequence, Sendable {
        typealias Element = StoreEvent
        fileprivate let token: Token

        struct AsyncIterator: AsyncIteratorProtocol {
            fileprivate let token: Token
            mutating func next() async -> StoreEvent? { await token.mailbox.next() }
        }

        func makeAsyncIterator() -> AsyncIterator { AsyncIterator(token: token) }

        /// Events published and not read yet: 0 when the reader has caught up (a burst of changes is over).
        var pending: Int { token.mailbox.backlog }
    }
}
