import ClusterModel

/// One service's balancer as one event loop sees it: the backends, their state, and the policy's memory.
/// Not thread-safe by design: every event loop keeps its own (as NGINX workers do), so picking takes no lock.
/// Pure: time comes in as `nowMillis`, randomness from the seed.
///
/// A pick first sorts the backends into classes (`Availability`): draining (weight 0), full (`maxConnections`)
/// and removed ones can take nothing; of the rest the policy chooses among the best class present: not avoided
/// over avoided, not ejected over ejected (panic mode), local over remote when `preferLocal` is on. Weighted
/// policies use the effective weight (slow start); ip-hash uses the configured weights, so a client's backend does
/// not move while another ramps. A pick allocates nothing and looks nothing up by key: it walks the backends a
/// few times (N is small); ip-hash reads the client's table entry and walks the backends only when that one
/// can't take the client. Its hot fields, like
/// `BackendState`'s, skip dynamic exclusivity checks (one event loop, no `inout` held across calls).
public final class Balancer {
    public let policy: BalancingPolicy
    @exclusivity(unchecked) public private(set) var options: BalancingOptions
    /// The current table's backends, in table order.
    @exclusivity(unchecked) public private(set) var states: [BackendState]
    /// Picks answered with an ejected backend because no other could take the connection (panic mode).
    public private(set) var panicPicks: UInt64 = 0

    @exclusivity(unchecked) private var random: SplitMix64
    /// Removed backends still carrying connections, by id, so that one coming back keeps counting them.
    private var retired: [String: BackendState] = [:]
    /// ip-hash's lookup table; nil for the other policies.
    @exclusivity(unchecked) private var hashTable: MaglevTable?
    /// Table entries ip-hash tries (the client's own, then rehashes) before choosing by rendezvous hashing.
    private static let hashProbes = 16

    public init(policy: BalancingPolicy, options: BalancingOptions = .init(), backends: [Backend], seed: UInt64,
                nowMillis: UInt64) {
        self.policy = policy
        self.options = options
        self.states = backends.map { BackendState(backend: $0, sinceMillis: nowMillis) }
        self.random = SplitMix64(seed: seed)
        rebuildHashTableIfChanged()
    }

    // MARK: - Table updates

    /// Applies a new table: backends keep their state by id (active counts, ejections, round-robin position), new
    /// ones start (slow start from now), removed ones leave (connections they carry keep accounting against their
    /// state, and a backend that comes back while it still has some resumes that state). A backend undrained
    /// (weight 0 → more) re-enters service with slow start. ip-hash rebuilds its table only when the set of
    /// backends or their weights changed.
    public func update(backends: [Backend], options: BalancingOptions? = nil, nowMillis: UInt64) {
        if let options { self.options = options }
        var old: [String: BackendState] = [:]
        for state in states { old[state.backend.id] = state }
        states = backends.map { backend in
            if let state = old.removeValue(forKey: backend.id) {
                if state.backend.weight == 0 && backend.weight > 0 { state.enterService(nowMillis: nowMillis) }
                state.backend = backend
                return state
            }
            if let state = retired.removeValue(forKey: backend.id) {
                state.backend = backend
                state.inTable = true
                state.enterService(nowMillis: nowMillis)
                return state
            }
            return BackendState(backend: backend, sinceMillis: nowMillis)
        }
        for state in old.values {
            state.inTable = false
            retired[state.backend.id] = state
        }
        retired = retired.filter { $0.value.active > 0 }
        rebuildHashTableIfChanged()
    }

    private func rebuildHashTableIfChanged() {
        guard policy == .ipHash else { return }
        if let table = hashTable, table.requestedSize == options.hashTableSize,
           table.key == MaglevTable.key(of: states) {
            hashTable?.rebind(to: states)
        } else {
            hashTable = MaglevTable(states: states, requestedSize: options.hashTableSize)
        }
    }

    // MARK: - Picking

    /// The backend for a new connection or request, or nil when none can take it (all draining, full or gone).
    /// `clientHash` is `ClientHash.of(...)` of the client address (used by ip-hash). Backends in `avoiding` (the
    /// ones this connection already failed on) are skipped while any other remains. Ejected backends are used
    /// only when nothing else is left (panic mode, as Envoy does).
    public func pick(clientHash: UInt64, nowMillis: UInt64, avoiding: [BackendState] = []) -> BackendState? {
        // ip-hash's common case in O(1): the client's own entry can take it and nothing could rank higher.
        if policy == .ipHash, let state = hashTable?.state(for: clientHash),
           tier(of: state, nowMillis: nowMillis, avoiding: avoiding, preferLocal: options.preferLocal) == 0 {
            return state
        }
        let best = classify(nowMillis: nowMillis, avoiding: avoiding)
        guard best != Availability.unavailable else { return nil }
        if best & Availability.ejected != 0 { panicPicks &+= 1 }
        switch policy {
        case .roundRobin: return smoothWeightedRoundRobin(among: best)
        case .leastConnections: return leastConnections(among: best)
        case .ipHash: return consistentHash(clientHash, among: best)
        case .random: return weightedRandom(among: best, excluding: nil)
        case .powerOfTwoChoices: return powerOfTwoChoices(among: best)
        }
    }

    /// A backend's class for one pick, as bits: the policy chooses among the backends of the lowest class present.
    /// Avoided outranks ejected (retrying where this very connection just failed is the worse bet), which outranks
    /// remote.
    enum Availability {
        static let remote: UInt8 = 1
        static let ejected: UInt8 = 2
        static let avoided: UInt8 = 4
        static let unavailable: UInt8 = .max
    }

    /// Sets every backend's `tier` (and, for weighted policies, `pickWeight`) for this pick; returns the best tier.
    private func classify(nowMillis: UInt64, avoiding: [BackendState]) -> UInt8 {
        let weighted = policy != .ipHash
        let options = options
        var best = Availability.unavailable
        for index in states.indices {
            let state = states[index]
            let tier = tier(of: state, nowMillis: nowMillis, avoiding: avoiding, preferLocal: options.preferLocal)
            if weighted && tier != Availability.unavailable {
                state.pickWeight = state.effectiveWeight(nowMillis: nowMillis, options: options)
            }
            state.tier = tier
            if tier < best { best = tier }
        }
        return best
    }

    /// `state`'s class for this pick (ending its ejection if the time is up).
    @inline(__always)
    private func tier(of state: BackendState, nowMillis: UInt64, avoiding: [BackendState], preferLocal: Bool)
        -> UInt8 {
        let limit = state.backend.maxConnections
        if state.backend.weight == 0 || (limit > 0 && state.active >= limit) { return Availability.unavailable }
        var tier: UInt8 = 0
        if state.ejectedUntilMillis != nil {
            state.endEjectionIfOver(nowMillis: nowMillis)
            if state.ejectedUntilMillis != nil { tier |= Availability.ejected }
        }
        if !avoiding.isEmpty && avoiding.contains(where: { $0 === state }) { tier |= Availability.avoided }
        if preferLocal && !state.backend.isLocal { tier |= Availability.remote }
        return tier
    }

    /// NGINX's smooth weighted round robin: every candidate's current weight grows by its weight, the largest
    /// wins and gives back the sum. Shares follow the weights, interleaved (5:1:1 gives a a b a c a a); equal
    /// weights rotate in table order.
    private func smoothWeightedRoundRobin(among tier: UInt8) -> BackendState? {
        // Indices rather than references keep the loop free of retains and releases.
        var total = 0
        var chosen = -1
        var chosenWeight = Int.min
        for index in states.indices where states[index].tier == tier {
            let state = states[index]
            state.currentWeight += state.pickWeight
            total += state.pickWeight
            if state.currentWeight > chosenWeight {
                chosen = index
                chosenWeight = state.currentWeight
            }
        }
        guard chosen >= 0 else { return nil }
        states[chosen].currentWeight -= total
        return states[chosen]
    }

    /// Fewest active connections per unit of effective weight (compared by cross-multiplying); ties go smooth
    /// weighted round robin, as in NGINX, so equal backends rotate instead of the first one taking every burst.
    private func leastConnections(among tier: UInt8) -> BackendState? {
        var fewestIndex = -1
        for index in states.indices where states[index].tier == tier {
            if fewestIndex >= 0 && !Self.isLessLoaded(states[index], than: states[fewestIndex]) { continue }
            fewestIndex = index
        }
        guard fewestIndex >= 0 else { return nil }
        let fewest = states[fewestIndex]
        for index in states.indices where states[index].tier == tier {
            if Self.isLessLoaded(fewest, than: states[index]) { states[index].tier = Availability.unavailable }
        }
        return smoothWeightedRoundRobin(among: tier)
    }

    @inline(__always)
    private static func isLessLoaded(_ a: BackendState, than b: BackendState) -> Bool {
        a.active * b.pickWeight < b.active * a.pickWeight
    }

    /// The client's Maglev entry; when that backend can't take it (ejected, avoided, full, draining, remote while
    /// a local one can), entries at rehashes of (client, attempt), then rendezvous hashing over the candidates:
    /// every step is a function of the client and the backend set, so the answer is stable.
    private func consistentHash(_ clientHash: UInt64, among tier: UInt8) -> BackendState? {
        var hash = clientHash
        for attempt in 1...Self.hashProbes {
            // Read in place: copying the table out would retain and release its arrays on every pick.
            guard let state = hashTable?.state(for: hash) else { return nil }
            if state.tier == tier { return state }
            hash = StableHash.mix(clientHash &+ UInt64(attempt) &* 0x9E37_79B9_7F4A_7C15)
        }
        var chosen = -1
        var highest: UInt64 = 0
        for index in states.indices where states[index].tier == tier {
            let score = StableHash.mix(clientHash ^ states[index].idHash)
            if chosen < 0 || score > highest {
                chosen = index
                highest = score
            }
        }
        return chosen >= 0 ? states[chosen] : nil
    }

    /// One draw in proportion to effective weight.
    private func weightedRandom(among tier: UInt8, excluding excluded: BackendState?) -> BackendState? {
        var total = 0
        for index in states.indices where states[index].tier == tier && states[index] !== excluded {
            total += states[index].pickWeight
        }
        guard total > 0 else { return nil }
        var point = StableHash.reduce(random.next(), into: total)
        for index in states.indices where states[index].tier == tier && states[index] !== excluded {
            if point < states[index].pickWeight { return states[index] }
            point -= states[index].pickWeight
        }
        return nil
    }

    /// Two distinct weighted draws; the one with fewer active per unit of effective weight wins, a tie goes to the
    /// first draw (Mitzenmacher's power of two choices; Envoy's least-request).
    private func powerOfTwoChoices(among tier: UInt8) -> BackendState? {
        guard let first = weightedRandom(among: tier, excluding: nil) else { return nil }
        guard let second = weightedRandom(among: tier, excluding: first) else { return first }
        return Self.isLessLoaded(second, than: first) ? second : first
    }

    /// `state`'s weight after slow start at `nowMillis` (its configured weight once ramped; 10% of it at first).
    public func effectiveWeight(of state: BackendState, nowMillis: UInt64) -> Double {
        Double(state.effectiveWeight(nowMillis: nowMillis, options: options)) / 1000
    }

    // MARK: - Connections and outcomes

    /// A connection or request was handed to `state` (counts it active).
    public func opened(_ state: BackendState) {
        state.active += 1
        state.total &+= 1
    }

    /// It finished (successfully or not). A close without an open is ignored rather than driving the count below
    /// zero, where least-connections would send it everything.
    public func closed(_ state: BackendState) {
        if state.active > 0 { state.active -= 1 }
    }

    /// The backend answered: resets its failure count. Once it has stayed in service twice as long as its last
    /// ejection lasted, a success also forgives its past ejections (the next one lasts the base time again).
    public func succeeded(_ state: BackendState, nowMillis: UInt64) {
        state.endEjectionIfOver(nowMillis: nowMillis)
        state.consecutiveFailures = 0
        guard state.backoffLevel > 0, state.ejectedUntilMillis == nil, nowMillis >= state.sinceMillis else { return }
        let (twice, overflow) = state.lastEjectionMillis.multipliedReportingOverflow(by: 2)
        if !overflow && nowMillis - state.sinceMillis >= twice { state.backoffLevel = 0 }
    }

    /// The backend failed (refused, reset, timed out): counts towards ejection. At `ejectAfterFailures` in a row
    /// it is ejected for baseEjectionMillis × 2^(ejections in its current streak), at most `maxEjectionMillis`;
    /// failures while it is ejected (panic mode) don't extend that. It returns by itself when the time is up,
    /// with its failure count cleared and its weight ramping (slow start).
    public func failed(_ state: BackendState, nowMillis: UInt64) {
        state.endEjectionIfOver(nowMillis: nowMillis)
        state.failures &+= 1
        state.consecutiveFailures += 1
        guard options.ejectAfterFailures > 0, state.ejectedUntilMillis == nil,
              state.consecutiveFailures >= options.ejectAfterFailures else { return }
        let length = ejectionMillis(streak: state.backoffLevel)
        let (until, overflow) = nowMillis.addingReportingOverflow(length)
        state.ejectedUntilMillis = overflow ? .max : until
        state.lastEjectionMillis = length
        state.backoffLevel += 1
        state.ejections += 1
    }

    /// base × 2^streak, capped at the maximum (doubling stops at the cap, so no overflow).
    private func ejectionMillis(streak: Int) -> UInt64 {
        let cap = options.maxEjectionMillis
        var length = options.baseEjectionMillis
        for _ in 0..<streak where length < cap {
            length = length > UInt64.max / 2 ? .max : length * 2
        }
        return min(length, cap)
    }
}
