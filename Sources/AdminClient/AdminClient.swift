public import ClusterModel
public import Foundation
public import PKI
import Synchronization
import Transport
public import Wire

/// The admin API as typed async calls: what the `flotilla` CLI and tests use to drive a cluster.
///
/// The client holds one connection at a time and moves it where the call needs to go:
/// - NOT_LEADER with the leader's address: it connects there (same credentials) and sends the call again, at
///   most `maxRedirects` times per call. NOT_LEADER without an address (no leader known, an election is under
///   way): it waits `retryPause` and tries the next configured address.
/// - UNAVAILABLE (the controller died, the connection dropped, nothing listens): it connects to the next
///   configured address and retries, but only a read is retried blindly. A write (put, delete, remove,
///   transfer) is sent again only when the error proves the controller never processed it (NOT_LEADER, a
///   connection that could not be made, a GOAWAY that says the call was not processed). A write whose outcome
///   is unknown (its connection was lost mid-call, its deadline passed) fails with a message saying so.
/// Every call is bounded by its `timeout` (default 10 s), redirects and reconnections included.
public final class AdminClient: Sendable {
    /// The configured controller addresses ("host:port"), in the order they are tried.
    public let addresses: [String]
    /// Opens a connection to one "host:port" (the credentials are inside), within a timeout.
    private let dial: @Sendable (_ address: String, _ timeout: Duration) async throws -> RPCClient
    private let configuration: Configuration
    private let state = Mutex(State())

    /// Limits of the retry loop.
    public struct Configuration: Sendable {
        /// NOT_LEADER answers with an address a call follows before it gives up.
        public var maxRedirects: Int
        /// The wait before asking again when no leader is known, or after every address failed once.
        public var retryPause: Duration
        /// The longest wait for one connection to be made (shortened to what is left of the call's timeout).
        public var connectTimeout: Duration

        public init(maxRedirects: Int = 5, retryPause: Duration = .milliseconds(200), connectTimeout: Duration = .seconds(5)) {
            self.maxRedirects = maxRedirects
            self.retryPause = retryPause
            self.connectTimeout = connectTimeout
        }
    }

    private struct State {
        /// The connection calls use; nil before the first call after a failure or `close()`.
        var connection: Connection?
        /// Index in `addresses` of the next address to try when the connection must move.
        var nextAddress = 0
        var closed = false
    }

    private init(
        addresses: [String], configuration: Configuration, connection: Connection?, nextAddress: Int,
        dial: @escaping @Sendable (String, Duration) async throws -> RPCClient
    ) {
        self.addresses = addresses
        self.configuration = configuration
        self.dial = dial
        state.withLock {
            $0.connection = connection
            $0.nextAddress = nextAddress
        }
    }

    /// Connects to the first controller in `addresses` that answers. Errors name every address tried.
    public static func connect(
        to addresses: [String], credentials: Credentials, timeout: Duration = .seconds(5),
        configuration: Configuration = .init()
    ) async throws -> AdminClient {
        let tls = try TLSContexts.client(credentials: credentials)
        let dial: @Sendable (String, Duration) async throws -> RPCClient = { address, timeout in
            guard let (host, port) = HostPort.parse(address) else {
                throw RPCError(.invalidArgument, "\(address): not host:port")
            }
            // The TLS handshake shares the connect's bound: a controller that accepts but does not answer (frozen,
            // overloaded) must not hold the call for the transport's default 10 s handshake timeout.
            var transport = TransportConfiguration()
            transport.handshakeTimeout = timeout
            return try await RPCClient.connect(
                host: host, port: port, tls: tls, expectedServerRoles: [.controller], configuration: transport, connectTimeout: timeout)
        }
        var failures: [String] = []
        for (index, address) in addresses.enumerated() {
            do {
                let client = try await dial(address, timeout)
                return AdminClient(
                    addresses: addresses, configuration: configuration,
                    connection: Connection(address: address, client: client),
                    nextAddress: (index + 1) % addresses.count, dial: dial)
            } catch {
                failures.append(Self.describe(error, address: address))
            }
        }
        throw RPCError(.unavailable, "could not reach a controller: \(failures.joined(separator: "; "))")
    }

    /// Closes the connection; calls still in flight fail with UNAVAILABLE.
    public func close() async {
        let connection = state.withLock { state -> Connection? in
            state.closed = true
            defer { state.connection = nil }
            return state.connection
        }
        await connection?.client.close()
    }

    /// The controller the client is connected to now (nil between a failure and the next call).
    public var controller: PeerIdentity? {
        state.withLock { $0.connection?.client.peer }
    }

    /// The address of the controller the client is connected to now.
    public var controllerAddress: String? {
        state.withLock { $0.connection?.address }
    }

    // MARK: - Calls

    /// The controller's id, version and uptime (of whichever controller answers; not redirected).
    public func status(timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_StatusResponse {
        try await call(Methods.adminStatus, Flotilla_V1_StatusRequest(), kind: .read, timeout: timeout)
    }

    /// Sets `key` to `value`; with `cas`, only if the key's modify index equals it (0: only if absent).
    /// Returns the Raft index of the write, the key's new modify index.
    public func varPut(key: String, value: Data, cas: UInt64? = nil, timeout: Duration = .seconds(10)) async throws -> UInt64 {
        var request = Flotilla_V1_VarPutRequest()
        request.key = key
        request.value = value
        if let cas { request.casIndex = cas }
        return try await call(Methods.varPut, request, kind: .write, timeout: timeout).index
    }

    /// Reads `key`: linearizable (answered through the leader) unless `stale`, which lets whichever
    /// controller is connected answer from its own state. NOT_FOUND when absent.
    public func varGet(key: String, stale: Bool = false, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_VariableRecord {
        var request = Flotilla_V1_VarGetRequest()
        request.key = key
        request.stale = stale
        let response = try await call(Methods.varGet, request, kind: .read, timeout: timeout)
        guard response.hasVariable else {
            throw RPCError(.internalError, "the controller answered VarGet without the variable")
        }
        return response.variable
    }

    /// The variables whose keys start with `prefix`, sorted by key (linearizable unless `stale`).
    public func varList(prefix: String = "", stale: Bool = false, timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_VariableRecord] {
        var request = Flotilla_V1_VarListRequest()
        request.prefix = prefix
        request.stale = stale
        return try await call(Methods.varList, request, kind: .read, timeout: timeout).variables
    }

    /// Deletes `key`; with `cas`, only if its modify index equals it. NOT_FOUND when absent.
    /// Returns the Raft index of the delete.
    public func varDelete(key: String, cas: UInt64? = nil, timeout: Duration = .seconds(10)) async throws -> UInt64 {
        var request = Flotilla_V1_VarDeleteRequest()
        request.key = key
        if let cas { request.casIndex = cas }
        return try await call(Methods.varDelete, request, kind: .write, timeout: timeout).index
    }

    /// The controllers, their Raft roles and progress, as the answering controller sees them.
    public func controllerList(timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ControllerListResponse {
        try await call(Methods.controllerList, Flotilla_V1_ControllerListRequest(), kind: .read, timeout: timeout)
    }

    /// Removes the controller `id` from the cluster (the leader included).
    public func controllerRemove(id: String, timeout: Duration = .seconds(10)) async throws {
        var request = Flotilla_V1_ControllerRemoveRequest()
        request.id = id
        _ = try await call(Methods.controllerRemove, request, kind: .write, timeout: timeout)
    }

    /// Creates a join token for `role` ("agent" or "controller"). `ttlSeconds` 0 means the default (24 h);
    /// `maxUses` 0 means no limit. A write: an unknown outcome is reported, not retried (a retry would mint a
    /// second token).
    public func tokenCreate(role: String, ttlSeconds: UInt64 = 0, maxUses: UInt32 = 0, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_TokenCreateResponse {
        var request = Flotilla_V1_TokenCreateRequest()
        request.role = role
        request.ttlSeconds = ttlSeconds
        request.maxUses = maxUses
        return try await call(Methods.tokenCreate, request, kind: .write, timeout: timeout)
    }

    /// Every join token (never the secrets), sorted by id.
    public func tokenList(timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_TokenInfo] {
        try await call(Methods.tokenList, Flotilla_V1_TokenListRequest(), kind: .read, timeout: timeout).tokens
    }

    /// Revokes join token `id`.
    public func tokenRevoke(id: String, timeout: Duration = .seconds(10)) async throws {
        var request = Flotilla_V1_TokenRevokeRequest()
        request.id = id
        _ = try await call(Methods.tokenRevoke, request, kind: .write, timeout: timeout)
    }

    /// The images each node (or `node`, an id or name) reported.
    public func imageList(node: String = "", timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_NodeImages] {
        var request = Flotilla_V1_ImageListRequest()
        request.node = node
        return try await call(Methods.imageList, request, kind: .read, timeout: timeout).nodes
    }

    /// Each node's (or `node`'s, an id or name) latest load-balancer report, of every service or of `service` (a
    /// name or id), sorted by node name. NOT_FOUND for an unknown node or service.
    public func balancerStats(node: String = "", service: String = "", timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_NodeBalancerStats] {
        var request = Flotilla_V1_BalancerStatsRequest()
        request.node = node
        request.service = service
        return try await call(Methods.balancerStats, request, kind: .read, timeout: timeout).nodes
    }

    /// Every node (agent), sorted by name.
    public func nodeList(timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_NodeInfo] {
        try await call(Methods.nodeList, Flotilla_V1_NodeListRequest(), kind: .read, timeout: timeout).nodes
    }

    /// Changes node `node`'s (id or name) availability and labels; returns the node as it is now.
    public func nodeUpdate(
        _ node: String, availability: String? = nil, addLabels: [String: String] = [:], removeLabels: [String] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> Flotilla_V1_NodeInfo {
        var request = Flotilla_V1_NodeUpdateRequest()
        request.node = node
        request.availability = availability ?? ""
        request.addLabels = Flotilla_V1_Label.list(addLabels)
        request.removeLabels = removeLabels
        return try await call(Methods.nodeUpdate, request, kind: .write, timeout: timeout)
    }

    /// Removes node `node` (id or name) and revokes its certificate; returns its id.
    public func nodeRemove(_ node: String, force: Bool = false, timeout: Duration = .seconds(10)) async throws -> String {
        var request = Flotilla_V1_NodeRemoveRequest()
        request.node = node
        request.force = force
        return try await call(Methods.nodeRemove, request, kind: .write, timeout: timeout).id
    }

    /// Creates a service; returns its record.
    public func serviceCreate(_ spec: Flotilla_V1_ServiceSpec, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceRecord {
        var request = Flotilla_V1_ServiceCreateRequest()
        request.spec = spec
        return try await call(Methods.serviceCreate, request, kind: .write, timeout: timeout)
    }

    /// Replaces a service's spec (`expectedVersion` 0: unconditionally).
    public func serviceUpdate(_ spec: Flotilla_V1_ServiceSpec, expectedVersion: UInt64 = 0, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceRecord {
        var request = Flotilla_V1_ServiceUpdateRequest()
        request.spec = spec
        request.expectedVersion = expectedVersion
        return try await call(Methods.serviceUpdate, request, kind: .write, timeout: timeout)
    }

    /// Returns service `name` to its previous spec.
    public func serviceRollback(_ name: String, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceRecord {
        var request = Flotilla_V1_ServiceRef()
        request.service = name
        return try await call(Methods.serviceRollback, request, kind: .write, timeout: timeout)
    }

    /// Removes service `name`.
    public func serviceRemove(_ name: String, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceRecord {
        var request = Flotilla_V1_ServiceRef()
        request.service = name
        return try await call(Methods.serviceRemove, request, kind: .write, timeout: timeout)
    }

    /// Every service with its task counts.
    public func serviceList(timeout: Duration = .seconds(10)) async throws -> [Flotilla_V1_ServiceSummary] {
        try await call(Methods.serviceList, Flotilla_V1_ServiceListRequest(), kind: .read, timeout: timeout).services
    }

    /// One service and its tasks.
    public func serviceInspect(_ name: String, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceInspectResponse {
        var request = Flotilla_V1_ServiceRef()
        request.service = name
        return try await call(Methods.serviceInspect, request, kind: .read, timeout: timeout)
    }

    /// How service `name` (or id) autoscales, as the leader sees it now: its settings and last decisions, what
    /// the agents' reports measure, and what the targets ask for. NOT_FOUND for an unknown service,
    /// FAILED_PRECONDITION for one that does not autoscale.
    public func serviceAutoscale(_ name: String, timeout: Duration = .seconds(10)) async throws -> Flotilla_V1_ServiceAutoscaleResponse {
        var request = Flotilla_V1_ServiceRef()
        request.service = name
        return try await call(Methods.serviceAutoscale, request, kind: .read, timeout: timeout)
    }

    /// Moves leadership to the voter `id` (nil: the most up-to-date other voter). Returns the new leader's id.
    /// A write: an outcome that is unknown is reported, not retried (retrying could move leadership twice).
    public func transferLeadership(to id: String? = nil, timeout: Duration = .seconds(10)) async throws -> String {
        var request = Flotilla_V1_TransferLeadershipRequest()
        request.id = id ?? ""
        return try await call(Methods.transferLeadership, request, kind: .write, timeout: timeout).leader
    }

    // MARK: - Redirects and retries

    /// Whether a call may be sent again when its outcome is unknown.
    enum CallKind {
        /// Changes nothing: safe to send again after any UNAVAILABLE.
        case read
        /// Changes the cluster: sent again only when the controller provably did not process it.
        case write
    }

    /// A backup of the cluster (`flotilla snapshot save`): taken on the leader, which is found first (a
    /// backup is a read, so this is safe to retry).
    public func snapshotSave(timeout: Duration = .seconds(60)) async throws -> [UInt8] {
        let list = try await controllerList(timeout: timeout)
        var targets = addresses
        if let leader = list.controllers.first(where: { $0.leader })?.address, !leader.isEmpty {
            targets.insert(leader, at: 0)
        }
        var failures: [String] = []
        for address in targets {
            do {
                let client = try await dial(address, configuration.connectTimeout)
                do {
                    let bytes = try await client.serverStreaming(
                        Methods.snapshotSave, Flotilla_V1_SnapshotSaveRequest(), options: CallOptions(timeout: timeout)
                    ) { chunks in
                        var bytes: [UInt8] = []
                        for try await chunk in chunks { bytes.append(contentsOf: chunk.data) }
                        return bytes
                    }
                    await client.close()
                    return bytes
                } catch {
                    await client.close()
                    throw error
                }
            } catch let error as RPCError where error.code == .notLeader || error.code == .unavailable {
                failures.append("\(address): \(error.message)")
            }
        }
        throw RPCError(.unavailable, "no controller could take a backup: \(failures.joined(separator: "; "))")
    }

    /// Sends `request` to the controller that can answer it, following NOT_LEADER and reconnecting on
    /// UNAVAILABLE as the type's documentation says, within `timeout` in all.
    func call<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, kind: CallKind, timeout: Duration
    ) async throws -> Response {
        let name = method.name.split(separator: "/").last.map(String.init) ?? method.name
        var retry = Retry(name: name, timeout: timeout)
        while true {
            let connection = try await nextConnection(&retry)
            do {
                return try await connection.unary(method, request, timeout: retry.deadline - ContinuousClock.now)
            } catch let error as RPCError {
                retry.lastError = error
                switch error.code {
                case .notLeader, .unavailable where kind == .read || Self.provesNotProcessed(error):
                    try await moveOn(after: error, from: connection, &retry)
                case .unavailable:
                    await retire(connection, advance: true)
                    throw RPCError(
                        .unavailable,
                        "the connection to \(connection.address) was lost while \(name) was in flight, so its outcome is unknown: it may or may not have been applied; check before retrying (\(error.message))")
                case .deadlineExceeded where kind == .write:
                    throw RPCError(
                        .deadlineExceeded,
                        "\(connection.address) did not answer \(name) within \(Self.format(timeout)), so its outcome is unknown: it may or may not have been applied; check before retrying")
                case .deadlineExceeded:
                    throw RPCError(.deadlineExceeded, "no controller answered \(name) within \(Self.format(timeout)) (last tried: \(connection.address))")
                default:
                    throw error
                }
            }
        }
    }

    /// Where one call stands in its search for a controller that answers it.
    private struct Retry {
        let name: String
        let timeout: Duration
        let deadline: ContinuousClock.Instant
        var redirects = 0
        /// The leader a NOT_LEADER named, to connect to next.
        var leader: String?
        var failuresInARow = 0
        var lastError: RPCError?

        init(name: String, timeout: Duration) {
            self.name = name
            self.timeout = timeout
            deadline = ContinuousClock.now + timeout
        }
    }

    /// The connection for the next attempt, or DEADLINE_EXCEEDED once the call's time is up.
    private func nextConnection(_ retry: inout Retry) async throws -> Connection {
        guard ContinuousClock.now < retry.deadline else {
            throw RPCError(.deadlineExceeded, "no controller answered \(retry.name) within \(Self.format(retry.timeout))"
                + (retry.lastError.map { "; last error: \($0.message)" } ?? ""))
        }
        let connection = try await connection(preferring: retry.leader, deadline: retry.deadline, lastError: &retry.lastError)
        retry.leader = nil
        return connection
    }

    /// After a call that provably changed nothing failed: NOT_LEADER with an address redirects there (at most
    /// `maxRedirects` times); NOT_LEADER without one pauses and moves to the next address; UNAVAILABLE moves to
    /// the next address at once, pausing once every address has failed in a row.
    private func moveOn(after error: RPCError, from connection: Connection, _ retry: inout Retry) async throws {
        if error.code == .notLeader {
            if let address = error.leaderAddress, !address.isEmpty {
                guard retry.redirects < configuration.maxRedirects else {
                    throw RPCError(
                        .notLeader,
                        "\(retry.name) was redirected \(retry.redirects) times without reaching the leader: \(error.message)",
                        leaderAddress: address)
                }
                retry.redirects += 1
                retry.leader = address
                await retire(connection, advance: false)
            } else {
                await retire(connection, advance: true)
                try await pause(until: retry.deadline)
            }
            return
        }
        await retire(connection, advance: true)
        retry.failuresInARow += 1
        if retry.failuresInARow >= max(addresses.count, 1) {
            retry.failuresInARow = 0
            try await pause(until: retry.deadline)
        }
    }

    /// The logs of a service's tasks or of one task (`request`), handed to `body` batch by batch as the leader
    /// streams them. The leader is found as for any read (NOT_LEADER followed, unreachable controllers skipped)
    /// within `findTimeout`, until the first batch arrives; a stream that breaks after that is an error (reading
    /// again would repeat lines). Returns when the stream ends (not following); following, it runs until the
    /// caller is cancelled.
    public func taskLogs(
        _ request: Flotilla_V1_TaskLogsRequest, findTimeout: Duration = .seconds(10),
        _ body: (Flotilla_V1_TaskLogsResponse) async throws -> Void
    ) async throws {
        var retry = Retry(name: "TaskLogs", timeout: findTimeout)
        while true {
            let connection = try await nextConnection(&retry)
            var received = false
            do {
                try await connection.serverStreaming(Methods.taskLogs, request) { batches in
                    for try await batch in batches {
                        received = true
                        try await body(batch)
                    }
                }
                return
            } catch let error as RPCError where !received && (error.code == .notLeader || error.code == .unavailable) {
                retry.lastError = error
                try await moveOn(after: error, from: connection, &retry)
            }
        }
    }

    /// The cluster's events (`request`), handed to `body` batch by batch, oldest first. The leader is found as
    /// for any read within `findTimeout`. Events have ids, so a stream that breaks (the leader changed or went
    /// away) is opened again on the new leader after the last id received, with `findTimeout` to find it:
    /// nothing is repeated and, while the history holds them, nothing is lost. Returns when the stream ends
    /// (not following); following, it runs until the caller is cancelled.
    public func events(
        _ request: Flotilla_V1_EventsRequest, findTimeout: Duration = .seconds(10),
        _ body: (Flotilla_V1_EventsResponse) async throws -> Void
    ) async throws {
        var request = request
        var retry = Retry(name: "Events", timeout: findTimeout)
        while true {
            let connection = try await nextConnection(&retry)
            do {
                try await connection.serverStreaming(Methods.events, request) { batches in
                    for try await batch in batches {
                        if let last = batch.events.last { request.sinceID = last.id }
                        retry = Retry(name: "Events", timeout: findTimeout)
                        try await body(batch)
                    }
                }
                guard request.follow, !Task.isCancelled else { return }
                // A following stream the controller ended (it is shutting down): resume elsewhere, pausing as
                // for an unreachable controller.
                let ended = RPCError(.unavailable, "\(connection.address) ended the event stream")
                retry.lastError = ended
                try await moveOn(after: ended, from: connection, &retry)
            } catch let error as RPCError where error.code == .notLeader || error.code == .unavailable {
                retry.lastError = error
                try await moveOn(after: error, from: connection, &retry)
            }
        }
    }

    /// True when an UNAVAILABLE error proves the request never reached a handler: the server's GOAWAY said
    /// it did not process the call, or the connection was already going away when the call was opened.
    /// (Errors from making a connection never get here: `connection(preferring:…)` handles those.)
    static func provesNotProcessed(_ error: RPCError) -> Bool {
        guard error.code == .unavailable else { return error.code == .notLeader }
        return error.message.contains("did not process this call")
            || error.message.contains("retry on a new connection")
            || error.message.contains("open a new connection")
    }

    /// The connection to send on: a new one to `preferred` (a leader named by NOT_LEADER) if it can be made,
    /// else the current one if it is still open, else a new one to the next configured address that answers.
    /// Failing to connect is always safe to retry (nothing was sent): a round in which every address failed
    /// with UNAVAILABLE is retried after a pause until the deadline; other failures (a refused certificate)
    /// end the call after one round.
    private func connection(preferring preferred: String?, deadline: ContinuousClock.Instant, lastError: inout RPCError?) async throws -> Connection {
        let clock = ContinuousClock()
        if let preferred {
            do {
                return try await install(address: preferred, deadline: deadline)
            } catch {
                lastError = RPCError(.unavailable, Self.describe(error, address: preferred))
            }
        }
        if let current = try state.withLock({ state -> Connection? in
            guard !state.closed else { throw RPCError(.cancelled, "the admin client is closed") }
            return state.connection
        }), current.isOpen {
            return current
        }
        while true {
            var failures: [String] = []
            var onlyTransient = true
            for _ in 0..<addresses.count {
                let address = state.withLock { state -> String in
                    defer { state.nextAddress = (state.nextAddress + 1) % addresses.count }
                    return addresses[state.nextAddress]
                }
                do {
                    return try await install(address: address, deadline: deadline)
                } catch {
                    failures.append(Self.describe(error, address: address))
                    if (error as? RPCError)?.code != .unavailable { onlyTransient = false }
                }
            }
            let summary = "could not reach a controller: \(failures.joined(separator: "; "))"
            guard onlyTransient, clock.now + configuration.retryPause < deadline else {
                throw RPCError(.unavailable, [summary, lastError.map { "earlier: \($0.message)" }].compactMap { $0 }.joined(separator: "; "))
            }
            lastError = RPCError(.unavailable, summary)
            try await pause(until: deadline)
        }
    }

    /// Connects to `address` and makes it the client's connection, retiring the one it replaces.
    private func install(address: String, deadline: ContinuousClock.Instant) async throws -> Connection {
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { throw RPCError(.deadlineExceeded, "no time left to connect to \(address)") }
        let client = try await dial(address, min(configuration.connectTimeout, remaining))
        let connection = Connection(address: address, client: client)
        let (replaced, closed) = state.withLock { state -> (Connection?, Bool) in
            guard !state.closed else { return (nil, true) }
            defer { state.connection = connection }
            return (state.connection, false)
        }
        if closed {
            await client.close()
            throw RPCError(.cancelled, "the admin client was closed")
        }
        if let replaced, replaced !== connection, replaced.retire() { await replaced.client.close() }
        return connection
    }

    /// Stops using `connection` (if it is still the current one); it closes once its calls in flight end.
    /// `advance`: the next connection goes to another configured address (this one failed).
    private func retire(_ connection: Connection, advance: Bool) async {
        let current = state.withLock { state -> Bool in
            guard state.connection === connection else { return false }
            state.connection = nil
            if advance, !addresses.isEmpty, addresses[state.nextAddress] == connection.address {
                state.nextAddress = (state.nextAddress + 1) % addresses.count
            }
            return true
        }
        if current, connection.retire() { await connection.client.close() }
    }

    private func pause(until deadline: ContinuousClock.Instant) async throws {
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else { return }
        try await Task.sleep(for: min(configuration.retryPause, remaining))
    }

    private static func describe(_ error: any Error, address: String) -> String {
        guard let error = error as? RPCError else { return "\(address): \(error)" }
        return error.message.contains(address) ? error.message : "\(address): \(error.message)"
    }

    static func format(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let milliseconds = attoseconds / 1_000_000_000_000_000
        return milliseconds == 0 ? "\(seconds) s" : "\(seconds * 1000 + milliseconds) ms"
    }
}

/// One connection and the calls in flight on it, so a connection that is replaced (a redirect) closes only
/// once the calls other tasks still have on it are done.
final class Connection: Sendable {
    let address: String
    let client: RPCClient
    private let bookkeeping = Mutex((inFlight: 0, retired: false, closed: false))

    init(address: String, client: RPCClient) {
        self.address = address
        self.client = client
        client.closeFuture.whenComplete { [weak self] _ in
            self?.bookkeeping.withLock { $0.closed = true }
        }
    }

    /// False once the connection is known to be closed: a call made on it now would fail without being sent.
    var isOpen: Bool { bookkeeping.withLock { !$0.closed } }

    func unary<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, timeout: Duration
    ) async throws -> Response {
        bookkeeping.withLock { $0.inFlight += 1 }
        do {
            let response = try await client.unary(method, request, options: CallOptions(timeout: timeout))
            await callEnded()
            return response
        } catch {
            await callEnded()
            throw error
        }
    }

    /// A server-streaming call without a deadline, read inside `body`.
    func serverStreaming<Request, Response>(
        _ method: MethodDescriptor<Request, Response>, _ request: Request, _ body: (ResponseStream<Response>) async throws -> Void
    ) async throws {
        bookkeeping.withLock { $0.inFlight += 1 }
        do {
            try await client.serverStreaming(method, request, body)
            await callEnded()
        } catch {
            await callEnded()
            throw error
        }
    }

    /// The last call on a retired connection closes it.
    private func callEnded() async {
        let last = bookkeeping.withLock { state -> Bool in
            state.inFlight -= 1
            return state.retired && state.inFlight == 0
        }
        if last { await client.close() }
    }

    /// Marks the connection retired; true when no call is in flight, so the caller should close it now.
    func retire() -> Bool {
        bookkeeping.withLock { state in
            state.retired = true
            return state.inFlight == 0
        }
    }
}
