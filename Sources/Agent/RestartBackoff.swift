public import Messages

/// When the agent restarts a task that stopped by itself (it exited, or its liveness check failed), in place on
/// this node: what systemd's `Restart=` and the kubelet's crash-loop backoff do, with Swarm's restart policy.
///
/// - `condition` "none" never restarts; "on-failure" restarts failures only (a status other than 0, an OOM
///   kill, a failed liveness check); "any" restarts every exit.
/// - The first restart waits `delay`, each next one twice as long as the one before, at most `cap`. A task
///   that ran `resetAfter` before it stopped starts over at `delay`.
/// - After `restartsPerNode` restarts in a row (without such a reset), the agent gives the task back: it is
///   reported failed, and the orchestrator replaces it, on another node when one can take it. `max_attempts`
///   within `window` also gives up (the orchestrator counts these restarts too, and then stops replacing).
///
/// Pure: times are offsets on one monotonic clock, given by the caller.
public struct RestartBackoff: Sendable, Equatable {
    public static let cap = Duration.seconds(300)
    public static let resetAfter = Duration.seconds(600)
    public static let restartsPerNode = 5

    public enum Decision: Sendable, Equatable {
        /// Restart after this long; `restart` counts restarts of this task so far, this one included.
        case restart(after: Duration, restart: Int)
        /// Do not restart; report how it ended (the policy does not restart it).
        case done
        /// Do not restart, and report it failed for this reason (the orchestrator takes over).
        case giveUp(String)
    }

    public let condition: String
    public let delay: Duration
    public let maxAttempts: Int
    /// nil: max_attempts counts forever.
    public let window: Duration?
    public let cap: Duration
    public let resetAfter: Duration
    /// Restarts since the last reset.
    public private(set) var inARow = 0
    /// Every restart so far (for max_attempts within the window).
    public private(set) var restartTimes: [Duration] = []

    public init(
        condition: String, delay: Duration, maxAttempts: Int = 0, window: Duration? = nil,
        cap: Duration = RestartBackoff.cap, resetAfter: Duration = RestartBackoff.resetAfter
    ) {
        self.condition = condition.isEmpty ? "any" : condition
        self.delay = delay > .zero ? delay : .seconds(1)
        self.maxAttempts = maxAttempts
        self.window = window
        self.cap = cap
        self.resetAfter = resetAfter
    }

    /// The policy of a service's spec.
    public init(_ policy: Flotilla_V1_RestartPolicy, cap: Duration = RestartBackoff.cap, resetAfter: Duration = RestartBackoff.resetAfter) {
        self.init(
            condition: policy.condition, delay: .milliseconds(Int(policy.delayMs)), maxAttempts: Int(policy.maxAttempts),
            window: policy.windowMs > 0 ? .milliseconds(Int(policy.windowMs)) : nil, cap: cap, resetAfter: resetAfter)
    }

    /// The task stopped by itself at `now` after running `ranFor`; `failed` unless it exited with status 0.
    public mutating func stopped(failed: Bool, ranFor: Duration, now: Duration) -> Decision {
        switch condition {
        case "none": return .done
        case "on-failure" where !failed: return .done
        default: break
        }
        if ranFor >= resetAfter { inARow = 0 }
        if maxAttempts > 0 {
            let counted = restartTimes.filter { window == nil || now - $0 < window! }.count
            if counted >= maxAttempts {
                let within = window.map { " within \(Self.text($0))" } ?? ""
                return .giveUp("restart limit reached (\(maxAttempts) restarts\(within))")
            }
        }
        if inARow >= Self.restartsPerNode {
            return .giveUp("failed \(inARow + 1) times in a row on this node")
        }
        var wait = delay
        for _ in 0..<inARow where wait < cap { wait = wait * 2 }
        inARow += 1
        restartTimes.append(now)
        return .restart(after: min(wait, cap), restart: restartTimes.count)
    }

    /// "1.5s", "5m": a duration as people write it.
    static func text(_ duration: Duration) -> String {
        let ms = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
        if ms % 60_000 == 0 && ms >= 60_000 { return "\(ms / 60_000)m" }
        if ms % 1000 == 0 { return "\(ms / 1000)s" }
        return ms >= 1000 ? "\(Double(ms) / 1000)s" : "\(ms)ms"
    }
}
