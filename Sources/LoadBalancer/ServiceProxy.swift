public import Balancing
public import NIOCore

/// One service's forwarding state, one copy per event loop: every connection is served on the loop that accepted
/// it and picks from that loop's balancer without a lock (as NGINX workers do). Table updates are applied on
/// every loop in turn; a connection keeps its backend through an update.
public final class ServiceProxy: Sendable {
    public let name: String
    /// Fixed for the proxy's life: TCP and HTTP run on different threads (`ProxyThreads`).
    public let mode: ProxyMode
    private let loops: [ObjectIdentifier: NIOLoopBoundBox<LoopService>]
    let eventLoops: [any EventLoop]
    /// The loops when they are relay loops (TCP mode); empty for HTTP.
    let relayLoops: [RelayLoop]

    /// Connections held now over every loop (`ProxySettings.holdWhenEmpty`).
    private let holds: HoldCount

    /// - Parameter firstHeld: called (on an event loop) whenever a connection is held while none was.
    public init(name: String, settings: ProxySettings, backends: [Backend], threads: ProxyThreads, seed: UInt64 = 0x5EED,
                firstHeld: @escaping @Sendable () -> Void = {}) throws {
        self.name = name
        self.mode = settings.mode
        let holds = HoldCount(firstHeld: firstHeld)
        self.holds = holds
        var loops: [ObjectIdentifier: NIOLoopBoundBox<LoopService>] = [:]
        var eventLoops: [any EventLoop] = []
        for (index, loop) in try threads.group(for: settings.mode).makeIterator().enumerated() {
            loops[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeBoxSendingValue(
                LoopService(name: name, settings: settings, backends: backends, seed: seed &+ UInt64(index), holds: holds), eventLoop: loop)
            eventLoops.append(loop)
        }
        self.loops = loops
        self.eventLoops = eventLoops
        self.relayLoops = eventLoops.compactMap { $0 as? RelayLoop }
    }

    /// Connections (HTTP: requests) waiting for a backend now, over every loop.
    public var heldConnections: Int { holds.value }

    /// This loop's state; only call on `loop`.
    func local(on loop: any EventLoop) -> LoopService? {
        loops[ObjectIdentifier(loop)]?.value
    }

    /// Applies a new table on every loop; completes when all have it. A different mode needs a new proxy; here
    /// the mode stays as it was.
    @discardableResult
    public func update(settings: ProxySettings, backends: [Backend]) -> EventLoopFuture<Void> {
        let futures = eventLoops.map { loop in
            let bound = loops[ObjectIdentifier(loop)]!
            return loop.submit { bound.value.update(settings: settings, backends: backends) }
        }
        return EventLoopFuture.andAllSucceed(futures, on: eventLoops[0])
    }

    /// Stops taking connections: idle pooled connections close; connections in flight finish.
    public func retire() {
        for loop in eventLoops {
            let bound = loops[ObjectIdentifier(loop)]!
            loop.execute { bound.value.retire() }
        }
    }

    /// Statistics summed over the loops.
    public func stats() async throws -> ServiceStats {
        var merged: ServiceStats?
        for loop in eventLoops {
            let bound = loops[ObjectIdentifier(loop)]!
            let local = try await loop.submit { bound.value.stats() }.get()
            guard var total = merged else { merged = local; continue }
            for backend in local.backends {
                if let index = total.backends.firstIndex(where: { $0.id == backend.id }) {
                    total.backends[index].add(backend)
                } else {
                    total.backends.append(backend)
                }
            }
            total.rejected += local.rejected
            total.holdTimeouts += local.holdTimeouts
            merged = total
        }
        var total = merged ?? ServiceStats(service: name, mode: "", policy: "", backends: [], rejected: 0)
        total.held = holds.value
        return total
    }
}

/// A service on one event loop: its balancer, and per backend its counters and (HTTP) idle upstream connections.
final class LoopService {
    let name: String
    private(set) var settings: ProxySettings
    private(set) var balancer: Balancer
    private var slots: [ObjectIdentifier: BackendSlot] = [:]
    private(set) var rejected: UInt64 = 0
    private(set) var retired = false
    /// Connections waiting for a backend, oldest first, and those that waited in vain.
    private var held: [any HeldConnection] = []
    private let holds: HoldCount
    private(set) var holdTimeouts: UInt64 = 0

    init(name: String, settings: ProxySettings, backends: [Backend], seed: UInt64, holds: HoldCount) {
        self.name = name
        self.holds = holds
        self.settings = settings
        self.balancer = Balancer(policy: settings.policy, options: settings.balancing, backends: backends, seed: seed,
                                 nowMillis: Clock.nowMillis())
        for state in balancer.states { slots[ObjectIdentifier(state)] = BackendSlot(state: state) }
    }

    func update(settings: ProxySettings, backends: [Backend]) {
        var settings = settings
        settings.mode = self.settings.mode
        let now = Clock.nowMillis()
        if settings.policy != balancer.policy {
            // A new policy starts a new balancer; backends in flight keep their old state objects.
            balancer = Balancer(policy: settings.policy, options: settings.balancing, backends: backends,
                                seed: UInt64(truncatingIfNeeded: now), nowMillis: now)
        } else {
            balancer.update(backends: backends, options: settings.balancing, nowMillis: now)
        }
        self.settings = settings
        var kept: [ObjectIdentifier: BackendSlot] = [:]
        for state in balancer.states {
            let key = ObjectIdentifier(state)
            let slot = slots.removeValue(forKey: key) ?? BackendSlot(state: state)
            slot.stats.weight = state.backend.weight
            // A draining backend (weight 0) keeps no idle connections.
            if state.backend.weight == 0 { slot.closeIdle() }
            kept[key] = slot
        }
        for slot in slots.values {
            slot.live = false
            slot.closeIdle()
        }
        slots = kept
        releaseHeld()
    }

    func retire() {
        retired = true
        for slot in slots.values {
            slot.live = false
            slot.closeIdle()
        }
        releaseHeld()
    }

    // MARK: Holding while empty

    /// No backend takes new connections (none, or all draining).
    var isEmpty: Bool { !balancer.states.contains { $0.backend.weight > 0 } }

    /// Holds `connection` until a backend appears, when the service holds while empty, has no backend and
    /// fewer than its limit wait on this port; false: the caller refuses it as usual.
    func hold(_ connection: any HeldConnection) -> Bool {
        guard settings.holdWhenEmpty, !retired, isEmpty, holds.take(limit: settings.holdQueueLimit) else { return false }
        held.append(connection)
        return true
    }

    /// `connection` waits no more (its client left, or it was closed).
    func unhold(_ connection: any HeldConnection) {
        guard let index = held.firstIndex(where: { $0 === connection }) else { return }
        held.remove(at: index)
        holds.give(1)
    }

    /// `connection` waited the whole hold timeout; the caller refuses it.
    func holdTimedOut(_ connection: any HeldConnection) {
        unhold(connection)
        holdTimeouts += 1
    }

    /// After an update: with a backend, every held connection goes on in arrival order; when the service is
    /// retired or holds no more, they are refused.
    private func releaseHeld() {
        guard !held.isEmpty else { return }
        let ending: HoldEnding
        if !retired && !isEmpty {
            ending = .forward
        } else if retired || !settings.holdWhenEmpty {
            ending = .refuse
        } else {
            return
        }
        // Taken first: a connection going on may fail and be closed, which looks for it in `held`.
        let waiting = held
        held = []
        holds.give(waiting.count)
        for connection in waiting { connection.holdEnded(ending) }
    }

    /// The backend's slot, or nil once it left the table (its numbers left with it).
    @inline(__always)
    func slot(for state: BackendState) -> BackendSlot? {
        slots[ObjectIdentifier(state)]
    }

    /// Counts against a backend (ignored once it left the table).
    func count(_ state: BackendState, _ change: (inout BackendStats) -> Void) {
        if let slot = slot(for: state) { change(&slot.stats) }
    }

    func countRejected() { rejected += 1 }

    func stats() -> ServiceStats {
        let now = Clock.nowMillis()
        let backends = balancer.states.map { state -> BackendStats in
            var stats = slot(for: state)?.stats ?? BackendSlot(state: state).stats
            stats.active = state.active
            stats.ejections = state.ejections
            stats.ejected = (state.ejectedUntilMillis ?? 0) > now
            return stats
        }
        var stats = ServiceStats(service: name, mode: settings.mode.rawValue, policy: settings.policy.rawValue,
                                 backends: backends, rejected: rejected)
        stats.holdTimeouts = holdTimeouts
        return stats
    }
}

/// Monotonic milliseconds for the balancers' clocks.
enum Clock {
    static func nowMillis() -> UInt64 { NIODeadline.now().uptimeNanoseconds / 1_000_000 }
    static func nowMicros() -> UInt64 { NIODeadline.now().uptimeNanoseconds / 1_000 }
}
