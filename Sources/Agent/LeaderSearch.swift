/// How an agent finds the leader among the controllers it knows, fast enough to be back within the grace a new
/// leader gives it (three heartbeat periods) and without waiting on a controller that just went away.
///
/// It goes straight to the leader a follower names, unless that one is unreachable (a follower may still name
/// the leader that just died). Otherwise it tries controllers in rounds: those that answered lately first, in
/// the order known; those that did not (connection refused, handshake timed out, or a session that broke) only
/// every third round or when no other is left, since one of them may hold the agent for the whole connect
/// timeout. A round that found no leader is followed by a backoff (the caller's); a session that ran and ended
/// starts a new round at once.
struct LeaderSearch: Sendable {
    private(set) var unreachable: Set<String> = []
    private var queue: [String] = []
    private var rounds = 0
    private var hint: String?
    private var restartAtOnce = true

    /// The next controller to try, and whether to back off first (a whole round found no leader).
    mutating func next(controllers: [String]) -> (target: String, backOff: Bool)? {
        if let hint {
            self.hint = nil
            if !unreachable.contains(hint) { return (hint, false) }
        }
        var backOff = false
        if queue.isEmpty {
            guard !controllers.isEmpty else { return nil }
            backOff = !restartAtOnce
            restartAtOnce = false
            let reachable = controllers.filter { !unreachable.contains($0) }
            let suspects = controllers.filter { unreachable.contains($0) }
            queue = reachable.isEmpty || rounds % 3 == 2 ? reachable + suspects : reachable
            rounds += 1
        }
        return (queue.removeFirst(), backOff)
    }

    /// `target` answered that it does not lead (a follower, or a leader that stepped down and so ended the
    /// session), naming the leader if it knows one.
    mutating func answered(_ target: String, leader: String?, sessionEnded: Bool = false) {
        unreachable.remove(target)
        hint = leader
        if sessionEnded { startOver() }
    }

    /// `target` could not be reached.
    mutating func failed(_ target: String) {
        unreachable.insert(target)
    }

    /// A session with `target` ran and ended: it is probably gone; look for the new leader at once.
    mutating func sessionEnded(with target: String) {
        unreachable.insert(target)
        startOver()
    }

    private mutating func startOver() {
        queue = []
        rounds = 0
        restartAtOnce = true
    }
}
