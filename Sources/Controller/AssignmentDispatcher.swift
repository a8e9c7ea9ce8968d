import ClusterModel
import ClusterStore
import Messages
import Orchestrator
import Synchronization

/// The leader's dispatcher: tells every agent with a session which tasks it runs, the complete set when the
/// session starts (or must resynchronise), then only what changed. One store watcher feeds an
/// `AssignmentIndex` (pure, in Orchestrator), so a store change costs O(changed tasks), whatever the number of
/// agents; each session reads its own bounded mailbox.
///
/// Everything that produces an update — registration, a store event, a resync — runs under one lock against
/// the state of that moment, so each session's updates come from ever newer states, in order.
final class AssignmentDispatcher: Sendable {
    /// What a session sends next.
    enum Update: Sendable {
        case complete([Flotilla_V1_TaskAssignment])
        case delta(AssignmentDelta)
        /// The nodes changed: the session sends the node its network view if that changed.
        case nodes
    }

    /// Updates a slow session may have queued before its backlog is replaced by one complete set.
    static let mailboxLimit = 256

    private struct Registration {
        let node: NodeID
        let mailbox: Mailbox<Update>
    }

    private struct State {
        var index = AssignmentIndex()
        var built = false
        var nextID = 0
        var sessions: [Int: Registration] = [:]
        /// Each node's "subnet via address", as last sent round: only a change there changes anyone's routes
        /// (a node's status flapping does not).
        var routing: [NodeID: String] = [:]
    }

    private let store: StoreApplication
    private let state = Mutex(State())

    init(store: StoreApplication) {
        self.store = store
    }

    /// Keeps the index up to date from the store and forwards changes to the sessions, until cancelled.
    func run() async {
        let watch = store.watch.subscribe()
        for await event in watch {
            state.withLock { state in
                // No sessions (a follower, or a leader no agent has reached yet): keep no index; the first
                // session to open builds it from the state of that moment.
                guard !state.sessions.isEmpty else {
                    state.built = false
                    return
                }
                let snapshot = store.read { $0 }
                switch event {
                case .reset:
                    state.index.rebuild(from: snapshot)
                    for registration in state.sessions.values {
                        registration.mailbox.replaceAll(with: .complete(state.index.complete(for: registration.node, in: snapshot)))
                    }
                case .changes(let changes):
                    let nodeChanges = changes.filter { $0.table == .nodes }.map { NodeID($0.key) }
                    var routingChanged = false
                    for id in nodeChanges {
                        let routing = snapshot.node(id).map { "\($0.subnet) via \($0.address)" }
                        if state.routing[id] != routing {
                            state.routing[id] = routing
                            routingChanged = true
                        }
                    }
                    if routingChanged {
                        // Subnets and addresses of other nodes are every agent's routes.
                        for registration in state.sessions.values {
                            let node = registration.node
                            registration.mailbox.push(.nodes) { .complete(state.index.complete(for: node, in: snapshot)) }
                        }
                    }
                    let deltas = state.index.apply(changes, state: snapshot)
                    guard !deltas.isEmpty else { return }
                    for registration in state.sessions.values {
                        guard let delta = deltas[registration.node] else { continue }
                        let node = registration.node
                        registration.mailbox.push(.delta(delta)) {
                            .complete(state.index.complete(for: node, in: snapshot))
                        }
                    }
                }
            }
        }
    }

    /// A session for `node`: its first update is the complete set; end it with `Session.end()`.
    func open(for node: NodeID) -> Session {
        let mailbox = Mailbox<Update>(limit: Self.mailboxLimit)
        let id = state.withLock { state in
            if !state.built {
                state.index.rebuild(from: store.read { $0 })
                state.built = true
            }
            let id = state.nextID
            state.nextID += 1
            state.sessions[id] = Registration(node: node, mailbox: mailbox)
            mailbox.replaceAll(with: .complete(state.index.complete(for: node, in: store.read { $0 })))
            return id
        }
        return Session(dispatcher: self, id: id, node: node, mailbox: mailbox)
    }

    /// Sends the node's complete set again in place of anything still queued (the agent saw a gap).
    fileprivate func resync(_ id: Int) {
        state.withLock { state in
            guard let registration = state.sessions[id] else { return }
            registration.mailbox.replaceAll(with: .complete(state.index.complete(for: registration.node, in: store.read { $0 })))
        }
    }

    fileprivate func close(_ id: Int) {
        state.withLock { $0.sessions.removeValue(forKey: id) }?.mailbox.close()
    }

    /// Sessions registered now (tests, metrics).
    var sessionCount: Int { state.withLock { $0.sessions.count } }

    /// One agent session's feed of updates.
    struct Session: Sendable {
        fileprivate let dispatcher: AssignmentDispatcher
        fileprivate let id: Int
        let node: NodeID
        fileprivate let mailbox: Mailbox<Update>

        /// The next update; nil once ended or cancelled.
        func next() async -> Update? { await mailbox.next() }
        func resync() { dispatcher.resync(id) }
        func end() { dispatcher.close(id) }
    }
}
