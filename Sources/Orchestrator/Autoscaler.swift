import ClusterStore
public import Messages

/// What the leader measured of one service's ready tasks at one moment (soft state from the agents' reports,
/// smoothed over the shell's sliding window). A value that was not measured is nil, and its target is skipped.
public struct AutoscaleObservation: Sendable, Equatable {
    /// Requests per second, summed over the service's ready tasks (every node's load balancer counted).
    public var requestsPerSecond: Double?
    /// Active connections, summed over the ready tasks.
    public var activeConnections: Double?
    /// CPU used as a percentage of the task's CPU reservation, averaged over the ready tasks (100: each task
    /// uses exactly its reservation).
    public var cpuPercent: Double?

    public init(requestsPerSecond: Double? = nil, activeConnections: Double? = nil, cpuPercent: Double? = nil) {
        self.requestsPerSecond = requestsPerSecond
        self.activeConnections = activeConnections
        self.cpuPercent = cpuPercent
    }
}

/// A change of a service's replicas the leader should commit, with the reason it records:
/// "rps 820/replica > target 200 → 3 → 7 replicas (13 wanted; at most +4 per 15 s)".
public struct AutoscaleDecision: Sendable, Equatable {
    public var from: UInt32
    public var to: UInt32
    public var reason: String

    public init(from: UInt32, to: UInt32, reason: String) {
        self.from = from
        self.to = to
        self.reason = reason
    }
}

/// The autoscaler's constants (the spec holds the per-service settings).
public struct AutoscalerConfiguration: Sendable, Equatable {
    /// Nothing changes while the load per ready task is within this fraction of a target (Kubernetes' HPA: 0.1).
    public var tolerance: Double
    /// A scale-up step: within any such period the replicas grow to at most double, or 4 more, whichever is
    /// more, than the count at its start (the HPA's default scale-up policies), ms.
    public var scaleUpPeriodMs: UInt64

    public init(tolerance: Double = 0.1, scaleUpPeriodMs: UInt64 = 15_000) {
        self.tolerance = tolerance
        self.scaleUpPeriodMs = scaleUpPeriodMs
    }
}

/// The autoscaling policy of one service (issue 8), after Kubernetes' horizontal pod autoscaler: pure, with
/// time passed in. The leader keeps one per autoscaled service as soft state and calls `evaluate` every time it
/// has a fresh observation (about every second); a decision it returns is committed through Raft with its reason.
///
/// - Per target: wanted = ceil(load / target) (that is ceil(ready × load per ready task / target)), unless the
///   load per ready task is within the tolerance of the target (then: the current count). Tasks that are not
///   ready are not measured; in a scale-up they count as idle, so a scale-up whose tasks are still starting is
///   not ordered again (HPA). The largest count over the targets is the recommendation.
/// - Stabilization: a scale-up goes to the lowest recommendation throughout the up-window, a scale-down to the
///   highest within the down-window; so load must stay high (low) for a whole window before replicas change.
///   Before the first recommendation (a new leader, a new service) the current count counts as recommended,
///   so a window is never cut short by a leader change.
/// - Limits: a scale-up grows the count of `scaleUpPeriodMs` ago at most to double or +4; the result is kept
///   within [min, max], and a count outside them is moved in at once.
/// - Scale to zero and from zero (min 0, issue 8 item 3): load alone takes a service down to 1 replica. It goes
///   to 0 only when its ready tasks measured no traffic at all (0 requests per second and 0 active
///   connections) throughout the down-window and no balancer holds a connection for it. At 0 nothing is
///   measured, so nothing moves it, until a balancer holds a connection and asks for a replica (`wake`): then
///   0 → 1 at once; more follow from the load as usual. The load balancers hold the connections meanwhile
///   (`BackendTable.hold_when_empty`).
public struct Autoscaler: Sendable {
    public var configuration: AutoscalerConfiguration
    /// What the targets asked for at the last evaluation that measured anything; nil before.
    public private(set) var recommendation: UInt32?
    private var recommendations = StepHistory()
    private var counts = StepHistory()
    /// Since when the ready tasks have measured no traffic at all, evaluation after evaluation; nil while there
    /// is traffic, nothing is measured (no ready task) or a connection is held.
    public private(set) var idleSinceMs: UInt64?

    public init(configuration: AutoscalerConfiguration = AutoscalerConfiguration()) {
        self.configuration = configuration
    }

    /// The change `autoscale` asks for at `nowMs` (monotonic, any origin), or nil for none. `replicas` is the
    /// service's count now, `ready` how many of its tasks are ready for traffic (the ones `observation` measured).
    /// `wakingAt` names a node whose load balancer holds a connection for the service (from the agents'
    /// `wake_service_ids`), nil when none does: a held connection is traffic, and at 0 replicas it is the one
    /// thing that starts a replica.
    public mutating func evaluate(
        _ autoscale: Flotilla_V1_AutoscaleSpec, replicas: UInt32, ready: UInt32, observation: AutoscaleObservation,
        wakingAt: String? = nil, nowMs: UInt64
    ) -> AutoscaleDecision? {
        let autoscale = ServiceSpecRules.normalized(autoscale)
        let lower = autoscale.min
        let upper = max(autoscale.max, autoscale.min)
        counts.append(replicas, at: nowMs)
        noteIdleness(ready: ready, observation: observation, waking: wakingAt != nil, nowMs: nowMs)
        if let node = wakingAt, let wake = Self.wake(replicas: replicas, autoscale: autoscale, at: node) { return wake }
        let wanted = Self.wanted(autoscale, replicas: replicas, ready: ready, observation: observation, tolerance: configuration.tolerance)
        if let wanted {
            recommendation = wanted.replicas
            recommendations.append(wanted.replicas, at: nowMs)
        }
        let upWindow = UInt64(autoscale.scaleUpWindowMs)
        let downWindow = UInt64(autoscale.scaleDownWindowMs)
        recommendations.forget(before: nowMs.saturatingMinus(max(upWindow, downWindow)))
        counts.forget(before: nowMs.saturatingMinus(configuration.scaleUpPeriodMs))

        if replicas < lower { return AutoscaleDecision(from: replicas, to: lower, reason: "below min \(lower) → \(replicas) → \(AutoscaleText.replicas(lower))") }
        if replicas > upper { return AutoscaleDecision(from: replicas, to: upper, reason: "above max \(upper) → \(replicas) → \(AutoscaleText.replicas(upper))") }
        if lower == 0, replicas > 0, let idleSinceMs, nowMs.saturatingMinus(idleSinceMs) >= downWindow {
            return AutoscaleDecision(from: replicas, to: 0, reason: "no traffic for \(AutoscaleText.duration(downWindow)) → \(replicas) → 0 replicas")
        }
        guard let wanted else { return nil }

        var limits: [String] = []
        var count = replicas
        // Before the first recommendation, what runs counts as recommended: a window is never cut short.
        let lowestUp = recommendations.values(since: nowMs.saturatingMinus(upWindow), before: replicas).min() ?? replicas
        let highestDown = recommendations.values(since: nowMs.saturatingMinus(downWindow), before: replicas).max() ?? replicas
        if count < lowestUp {
            count = lowestUp
            if count != wanted.replicas { limits.append("the lowest wanted in the last \(AutoscaleText.duration(upWindow))") }
            let start = counts.value(at: nowMs.saturatingMinus(configuration.scaleUpPeriodMs)) ?? counts.first ?? replicas
            let (doubled, stepped) = (start.multipliedReportingOverflow(by: 2).partialValue, start.addingReportingOverflow(4).partialValue)
            let most = max(doubled, stepped, replicas)
            if count > most {
                count = most
                limits.append("at most \(stepped >= doubled ? "+4" : "double") per \(AutoscaleText.duration(configuration.scaleUpPeriodMs))")
            }
        } else if count > highestDown {
            count = highestDown
            if count != wanted.replicas { limits.append("the highest wanted in the last \(AutoscaleText.duration(downWindow))") }
        }
        // A bound that cuts in is the one limit that binds.
        if count > upper {
            count = upper
            limits = ["max \(upper)"]
        } else if count < replicas && count < max(lower, 1) {
            count = max(lower, 1)
            limits = [lower == 0 ? "at least 1 until no traffic for \(AutoscaleText.duration(downWindow))" : "min \(lower)"]
        }
        guard count != replicas else { return nil }
        let unit = wanted.metric == "cpu" ? "%" : ""
        var reason = "\(wanted.metric) \(AutoscaleText.number(wanted.perReplica))\(unit)/replica \(count > replicas ? ">" : "<") target \(wanted.target)\(unit)"
            + " → \(replicas) → \(AutoscaleText.replicas(count))"
        if !limits.isEmpty { reason += " (\(wanted.replicas) wanted; \(limits.joined(separator: "; ")))" }
        return AutoscaleDecision(from: replicas, to: count, reason: reason)
    }

    // MARK: - Zero

    /// The service woken: 0 → 1 when it has no replica, a balancer holds a connection for it (at `node`) and the
    /// spec allows a replica; nil otherwise (a running replica takes the connection once it is ready).
    public static func wake(replicas: UInt32, autoscale: Flotilla_V1_AutoscaleSpec, at node: String) -> AutoscaleDecision? {
        guard replicas == 0, max(autoscale.max, autoscale.min) >= 1 else { return nil }
        return AutoscaleDecision(from: 0, to: 1, reason: "a connection is waiting at \(node) → 0 → 1 replica")
    }

    /// Keeps `idleSinceMs`: idle starts at the first evaluation whose ready tasks measured neither requests nor
    /// connections, and ends at any traffic, at a held connection, or when nothing is measured (no ready task,
    /// or a metric missing), so that a whole window of measured silence is needed, after a wake too.
    private mutating func noteIdleness(ready: UInt32, observation: AutoscaleObservation, waking: Bool, nowMs: UInt64) {
        let silent = ready > 0 && !waking && observation.requestsPerSecond == 0 && observation.activeConnections == 0
        if !silent {
            idleSinceMs = nil
        } else if idleSinceMs == nil {
            idleSinceMs = nowMs
        }
    }

    // MARK: - Recommendation

    /// What one target asks for, and what it saw.
    struct Wanted {
        var replicas: UInt32
        var metric: String
        var perReplica: Double
        var target: UInt32
    }

    /// The largest count the targets ask for; nil when no task is ready or nothing with a target was measured.
    static func wanted(
        _ autoscale: Flotilla_V1_AutoscaleSpec, replicas: UInt32, ready: UInt32, observation: AutoscaleObservation, tolerance: Double
    ) -> Wanted? {
        guard ready > 0 else { return nil }
        let signals: [(metric: String, total: Double?, target: UInt32)] = [
            ("rps", observation.requestsPerSecond, autoscale.targetRps),
            ("conns", observation.activeConnections, autoscale.targetConnections),
            ("cpu", observation.cpuPercent.map { $0 * Double(ready) }, autoscale.targetCpuPercent),
        ]
        var best: Wanted?
        for signal in signals where signal.target > 0 {
            guard let total = signal.total, total.isFinite, total >= 0 else { continue }
            let count = wanted(total: total, target: Double(signal.target), replicas: replicas, ready: ready, tolerance: tolerance)
            if best.map({ count > $0.replicas }) ?? true {
                best = Wanted(replicas: count, metric: signal.metric, perReplica: total / Double(ready), target: signal.target)
            }
        }
        return best
    }

    /// ceil(total / target), or `replicas` while the load per task is within the tolerance of the target.
    static func wanted(total: Double, target: Double, replicas: UInt32, ready: UInt32, tolerance: Double) -> UInt32 {
        let readyRatio = total / (Double(ready) * target)
        var ratio = readyRatio
        // Tasks still starting count as idle in a scale-up: once enough are on their way, it is not repeated.
        if readyRatio > 1 && ready < replicas { ratio = total / (Double(replicas) * target) }
        if abs(ratio - 1) <= tolerance || (readyRatio > 1) != (ratio > 1) { return replicas }
        // The epsilon keeps a quotient that floating point puts a hair above a whole number from rounding up.
        let count = UInt32(min(max((total / target - 1e-9).rounded(.up), 0), Double(UInt32.max)))
        return ratio > 1 ? max(count, replicas) : min(count, replicas)
    }

}

/// A value over time as a step function: each value holds from its time until the next one's.
struct StepHistory: Sendable {
    private var times: [UInt64] = []
    private var values: [UInt32] = []

    /// `value` holds from `time` on (times never go back; an earlier one is taken as the last one's).
    mutating func append(_ value: UInt32, at time: UInt64) {
        if values.last == value { return }
        times.append(max(time, times.last ?? 0))
        values.append(value)
    }

    /// The first value there is.
    var first: UInt32? { values.first }

    /// The value in force at `time`; nil before the first.
    func value(at time: UInt64) -> UInt32? {
        guard let index = times.lastIndex(where: { $0 <= time }) else { return nil }
        return values[index]
    }

    /// Every value in force at some moment from `time` on (the one in force then, and every later one), with
    /// `before` standing for the time before the first value when `time` is earlier.
    func values(since time: UInt64, before: UInt32) -> [UInt32] {
        guard let first = times.lastIndex(where: { $0 <= time }) else { return [before] + values }
        return Array(values[first...])
    }

    /// Drops what no moment from `time` on needs (keeping the value in force at `time`).
    mutating func forget(before time: UInt64) {
        guard let index = times.lastIndex(where: { $0 <= time }), index > 0 else { return }
        times.removeFirst(index)
        values.removeFirst(index)
    }
}

extension UInt64 {
    func saturatingMinus(_ other: UInt64) -> UInt64 { self >= other ? self - other : 0 }
}
