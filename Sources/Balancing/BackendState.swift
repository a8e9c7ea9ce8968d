/// What one balancer knows about one backend: the table's entry plus what it has seen (active connections,
/// consecutive failures, ejection). A reference type so that a connection keeps accounting against the backend
/// it was given even after a table update replaces or removes it.
///
/// Its fields are read for every backend on every pick, so they opt out of Swift's dynamic exclusivity checks
/// (`@exclusivity(unchecked)`; a check per access cost more than the pick itself). That is sound because a
/// balancer and its states live on one event loop and nothing holds an `inout` access to a field across a call.
public final class BackendState {
    @exclusivity(unchecked) public internal(set) var backend: Backend
    /// Connections (L4) or requests (L7) in flight through this balancer.
    @exclusivity(unchecked) public internal(set) var active: Int = 0
    /// Connections or requests ever given to it.
    @exclusivity(unchecked) public internal(set) var total: UInt64 = 0
    /// Failures in a row since the last success (starts again from 0 when an ejection ends).
    @exclusivity(unchecked) public internal(set) var consecutiveFailures: Int = 0
    /// Failures ever reported for it.
    @exclusivity(unchecked) public internal(set) var failures: UInt64 = 0
    /// Times outlier detection has ejected it.
    @exclusivity(unchecked) public internal(set) var ejections: Int = 0
    /// Ejected until this time (ms); nil when not ejected. The balancer clears it lazily (at the next pick or
    /// report after that time), so ask `isEjected(nowMillis:)` rather than comparing this with nil.
    @exclusivity(unchecked) public internal(set) var ejectedUntilMillis: UInt64?
    /// When it (re)entered service, for slow start: added to the table, undrained, or back from ejection.
    @exclusivity(unchecked) public internal(set) var sinceMillis: UInt64
    /// False once a table update removed it: it takes no new connections.
    @exclusivity(unchecked) public internal(set) var inTable: Bool = true

    // MARK: - Outlier backoff

    /// Ejections in the current backoff streak: the next one lasts base × 2^level (capped).
    @exclusivity(unchecked) var backoffLevel = 0
    /// How long the last ejection lasted, to judge when the backend has been healthy long enough to forgive.
    @exclusivity(unchecked) var lastEjectionMillis: UInt64 = 0
    /// It entered service by returning from an ejection (it ramps even when slow start is off).
    @exclusivity(unchecked) var returnedFromEjection = false

    // MARK: - Policy memory and per-pick scratch

    /// Smooth weighted round robin's current weight (kept across table updates, so fairness survives them).
    @exclusivity(unchecked) var currentWeight = 0
    /// This pick's class: lower is better; `Availability.unavailable` when it can't take anything.
    @exclusivity(unchecked) var tier: UInt8 = 0
    /// This pick's effective weight in thousandths of a weight unit.
    @exclusivity(unchecked) var pickWeight = 0

    /// Two independent stable hashes of the id: the Maglev permutation's offset and skip, and rendezvous.
    let idHash: UInt64
    let idSkipHash: UInt64

    init(backend: Backend, sinceMillis: UInt64) {
        self.backend = backend
        self.sinceMillis = sinceMillis
        idHash = StableHash.mix(StableHash.fnv1a(backend.id.utf8))
        idSkipHash = StableHash.fmix(StableHash.fnv1a(backend.id.utf8, basis: 0x84222325CBF29CE4))
    }

    /// Whether outlier detection keeps it out at `nowMillis` (it is then used only in panic mode).
    public func isEjected(nowMillis: UInt64) -> Bool {
        guard let until = ejectedUntilMillis else { return false }
        return nowMillis < until
    }

    /// Ends an ejection whose time is up: the backend is back in service from the moment it ended.
    func endEjectionIfOver(nowMillis: UInt64) {
        guard let until = ejectedUntilMillis, nowMillis >= until else { return }
        ejectedUntilMillis = nil
        sinceMillis = until
        returnedFromEjection = true
        consecutiveFailures = 0
    }

    /// Added, re-added or undrained: slow start begins now.
    func enterService(nowMillis: UInt64) {
        sinceMillis = nowMillis
        returnedFromEjection = false
    }

    /// Weight in thousandths, after slow start: a linear ramp from 10% at `sinceMillis` to 100% `rampMillis` later.
    /// Reads as if an ejection that is over had ended (without clearing it), so it can serve read-only callers.
    func effectiveWeight(nowMillis: UInt64, options: BalancingOptions) -> Int {
        let weight = Int(min(backend.weight, Self.maximumWeight))
        var since = sinceMillis
        var returning = returnedFromEjection
        if let until = ejectedUntilMillis, nowMillis >= until {
            since = until
            returning = true
        }
        let ramp = options.slowStartMillis > 0 || !returning ? options.slowStartMillis : options.baseEjectionMillis
        let elapsed = nowMillis >= since ? nowMillis - since : 0
        guard elapsed < ramp else { return weight * 1000 }
        // 900 × elapsed / ramp, without overflow even for absurd ramps (the quotient is below 900).
        let ramped = elapsed <= UInt64.max / 900
            ? 900 * elapsed / ramp : ramp.dividingFullWidth(elapsed.multipliedFullWidth(by: 900)).quotient
        return weight * (100 + Int(ramped))
    }

    /// Far above the documented 256; it only keeps weight × active products from overflowing.
    static let maximumWeight: UInt32 = 1 << 16
}
