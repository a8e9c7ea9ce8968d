/// How a service's balancer chooses a backend for a new connection (L4) or request (L7).
public enum BalancingPolicy: String, CaseIterable, Sendable {
    /// Smooth weighted round robin (NGINX's): equal weights give a strict rotation; weights give proportional,
    /// interleaved shares.
    case roundRobin = "round-robin"
    /// Fewest active connections relative to weight; ties go round robin.
    case leastConnections = "least-conn"
    /// A consistent hash of the client address (a Maglev table): a client keeps its backend, and adding or
    /// removing one backend of N remaps about 1/N of the clients.
    case ipHash = "ip-hash"
    /// Weighted random.
    case random = "random"
    /// Power of two choices: two backends drawn at random (weighted), the one with fewer active requests wins.
    case powerOfTwoChoices = "p2c"

    /// Accepts the canonical names and the common aliases ("roundrobin", "rr", "leastconn", "least-connections",
    /// "source", "hash", "p2c", "least-request").
    public init?(named name: String) {
        switch name.lowercased() {
        case "round-robin", "roundrobin", "rr", "weighted-round-robin", "": self = .roundRobin
        case "least-conn", "leastconn", "least-connections": self = .leastConnections
        case "ip-hash", "iphash", "source", "hash", "consistent-hash", "maglev": self = .ipHash
        case "random": self = .random
        case "p2c", "least-request", "power-of-two": self = .powerOfTwoChoices
        default: return nil
        }
    }
}

/// Tuning that applies to every backend of one service's balancer.
public struct BalancingOptions: Sendable, Equatable {
    /// Consecutive failures (connect errors, resets before a response, 5xx-less timeouts) that eject a backend.
    public var ejectAfterFailures: Int
    /// First ejection lasts this long; each further ejection of the same backend doubles it, up to `maxEjectionMillis`.
    public var baseEjectionMillis: UInt64
    public var maxEjectionMillis: UInt64
    /// A new backend (or one back from ejection) ramps its effective weight from 10% to 100% over this period; 0 = off.
    public var slowStartMillis: UInt64
    /// Prefer backends on this balancer's node while any of them can take the connection.
    public var preferLocal: Bool

    public init(ejectAfterFailures: Int = 3, baseEjectionMillis: UInt64 = 5_000, maxEjectionMillis: UInt64 = 300_000,
                slowStartMillis: UInt64 = 0, preferLocal: Bool = false) {
        self.ejectAfterFailures = ejectAfterFailures
        self.baseEjectionMillis = baseEjectionMillis
        self.maxEjectionMillis = maxEjectionMillis
        self.slowStartMillis = slowStartMillis
        self.preferLocal = preferLocal
    }
}

/// One service's balancer as one event loop sees it: the backends, their state, and the policy's memory.
/// Not thread-safe by design: every event loop keeps its own (as NGINX workers do), so picking takes no lock.
/// Pure: time comes in as `nowMillis`, randomness from the seed.
public final class Balancer {
    public let policy: BalancingPolicy
    public private(set) var options: BalancingOptions
    /// The current table's backends, in table order.
    public private(set) var states: [BackendState]

    public init(policy: BalancingPolicy, options: BalancingOptions = .init(), backends: [Backend], seed: UInt64,
                nowMillis: UInt64) {
        self.policy = policy
        self.options = options
        self.states = backends.map { BackendState(backend: $0, sinceMillis: nowMillis) }
        self.rotation = 0
        _ = seed
    }

    private var rotation: Int

    /// Applies a new table: backends keep their state by id (active counts, ejections), new ones start (slow
    /// start from now), removed ones leave (connections they carry keep accounting against their state).
    public func update(backends: [Backend], options: BalancingOptions? = nil, nowMillis: UInt64) {
        if let options { self.options = options }
        var old: [String: BackendState] = [:]
        for state in states { old[state.backend.id] = state }
        states = backends.map { backend in
            if let state = old.removeValue(forKey: backend.id) {
                state.backend = backend
                return state
            }
            return BackendState(backend: backend, sinceMillis: nowMillis)
        }
        for state in old.values { state.inTable = false }
    }

    /// The backend for a new connection or request, or nil when none can take it (all draining, full or gone).
    /// `clientHash` is `ClientHash.of(...)` of the client address (used by ip-hash). Backends in `avoiding` (the
    /// ones this connection already failed on) are skipped while any other remains. Ejected backends are used
    /// only when nothing else is left (panic mode, as Envoy does).
    public func pick(clientHash: UInt64, nowMillis: UInt64, avoiding: [BackendState] = []) -> BackendState? {
        let candidates = states.filter { state in
            state.backend.weight > 0 && !avoiding.contains { $0 === state }
        }
        guard !candidates.isEmpty else { return nil }
        rotation &+= 1
        return candidates[rotation % candidates.count]
    }

    /// A connection or request was handed to `state` (counts it active).
    public func opened(_ state: BackendState) {
        state.active += 1
        state.total &+= 1
    }

    /// It finished (successfully or not).
    public func closed(_ state: BackendState) {
        state.active -= 1
    }

    /// The backend answered: resets its failure count.
    public func succeeded(_ state: BackendState, nowMillis: UInt64) {
        state.consecutiveFailures = 0
    }

    /// The backend failed (refused, reset, timed out): counts towards ejection.
    public func failed(_ state: BackendState, nowMillis: UInt64) {
        state.consecutiveFailures += 1
    }
}
