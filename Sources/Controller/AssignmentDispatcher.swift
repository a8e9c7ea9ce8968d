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
/// It also publishes the backend tables (`BackendTables`, pure, in Orchestrator) to every agent: the complete
/// set with every complete assignment set, then the tables that changed, computed once per burst of store
/// changes (when the watcher has caught up, or every `tableBurstLimit` changes under a steady stream) for the
/// services the burst touched, and sent to every session alike. A change that also changes assignments publishes
/// the tables first, so an agent told to stop a task has already seen it draining.
///
/// Everything that produces an update — registration, a store event, a resync — runs under one lock against
/// the state of that moment, so each session's updates come from ever newer states, in order.
final class AssignmentDispatcher: Sendable {
    /// What a session sends next.
    enum Update: Sendable {
        /// The node's assignments and every backend table: the whole truth.
        case complete([Flotilla_V1_TaskAssignment], tables: [Flotilla_V1_BackendTable])
        case delta(AssignmentDelta)
        /// The nodes changed: the session sends the node its network view if that changed.
        case nodes
        /// Backend tables changed (every session gets the same).
        case tables(BackendTableDelta)
    }

    /// Updates a slow session may have queued before its backlog is replaced by one complete set.
    static let mailboxLimit = 256
    /// Store changes after which the tables are published even if more are queued.
    static let tableBurstLimit = 128

    private struct Registration {
        let node: NodeID
        let mailbox: Mailbox<Update>
    }

    private struct State {
        var index = AssignmentIndex()
        var tables = BackendTables()
        /// Store changes noted in the tables since they were last published.
        var unpublishedChanges = 0
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

    /// Keeps the index and the tables up to date from the store and forwards changes to the sessions, until
    /// cancelled.
    func run() async {
        await run(watching: store.watch.subscribe())
    }

    /// `run()` on a watcher subscribed beforehand (tests queue a burst of changes before it reads them).
    func run(watching watch: StoreWatch.Subscription) async {
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
                    state.tables.invalidateAll()
                    _ = state.tables.refresh(from: snapshot)
                    state.unpublishedChanges = 0
                    for registration in state.sessions.values {
                        registration.mailbox.replaceAll(with: Self.complete(for: registration.node, state, snapshot))
                    }
                case .changes(let changes):
                    state.tables.note(changes, in: snapshot)
                    state.unpublishedChanges += 1
                    let deltas = state.index.apply(changes, state: snapshot)
                    // Tables go before assignments: a task told to stop is already draining in every table. Its
                    // agent reads updates in order and drains before it stops the task, waiting for that table.
                    if !deltas.isEmpty || watch.pending == 0 || state.unpublishedChanges >= Self.tableBurstLimit {
                        publishTables(&state, snapshot)
                    }
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
                            registration.mailbox.push(.nodes) { Self.complete(for: node, state, snapshot) }
                        }
                    }
                    guard !deltas.isEmpty else { return }
                    for registration in state.sessions.values {
                        guard let delta = deltas[registration.node] else { continue }
                        let node = registration.node
                        registration.mailbox.push(.delta(delta)) { Self.complete(for: node, state, snapshot) }
                    }
                }
            }
        }
    }

    /// Computes the tables the noted changes touched and sends what changed to every session.
    private func publishTables(_ state: inout State, _ snapshot: ClusterState) {
        state.unpublishedChanges = 0
        let delta = state.tables.refresh(from: snapshot)
        guard !delta.isEmpty else { return }
        for registration in state.sessions.values {
            let node = registration.node
            registration.mailbox.push(.tables(delta)) { Self.complete(for: node, state, snapshot) }
        }
    }

    /// The whole truth for `node`: its assignments and every table (as of the last publication; changes noted
    /// since follow as a `.tables` update).
    private static func complete(for node: NodeID, _ state: State, _ snapshot: ClusterState) -> Update {
        .complete(state.index.complete(for: node, in: snapshot), tables: state.tables.complete)
    }

    /// A session for `node`: its first update is the complete set; end it with `Session.end()`.
    func open(for node: NodeID) -> Session {
        let mailbox = Mailbox<Update>(limit: Self.mailboxLimit)
        let id = state.withLock { state in
            let snapshot = store.read { $0 }
            if !state.built {
                state.index.rebuild(from: snapshot)
                state.tables.invalidateAll()
                _ = state.tables.refresh(from: snapshot)
                state.unpublishedChanges = 0
                state.built = true
            }
            let id = state.nextID
            state.nextID += 1
            state.sessions[id] = Registration(node: node, mailbox: mailbox)
            mailbox.replaceAll(with: Self.complete(for: node, state, snapshot))
            return id
        }
        return Session(dispatcher: self, id: id, node: node, mailbox: mailbox)
    }

    /// Sends the node's complete set again in place of anything still queued (the agent saw a gap).
    fileprivate func resync(_ id: Int) {
        state.withLock { state in
            guard let registration = state.sessions[id] else { return }
            registration.mailbox.replaceAll(with: Self.complete(for: registration.node, state, store.read { $0 }))
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
