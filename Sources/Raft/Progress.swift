/// What the leader knows about one follower's log, and how it is sending to it (etcd's tracker.Progress).
struct Progress: Sendable {
    enum State: Sendable, Equatable {
        /// Next index unknown: one append at a time until one is accepted.
        case probe
        /// Follower is in sync: appends are pipelined up to the in-flight window.
        case replicate
        /// A snapshot is on its way; appends wait until it is installed.
        case snapshot(index: LogIndex)
    }

    /// Highest index known replicated on the follower.
    var match: LogIndex = 0
    /// Next index to send.
    var next: LogIndex
    var state: State = .probe
    /// In probe state: an append is outstanding; wait for its answer (or the next heartbeat) before another.
    var probeSent = false
    /// Last index of each append in flight, oldest first (replicate state flow control).
    var inflight: [LogIndex] = []
    /// Heard from since the last check-quorum round.
    var recentActive = false
    /// Bytes of the snapshot already acknowledged by the follower (snapshot state).
    var snapshotOffset = 0

    init(next: LogIndex) {
        self.next = next
    }

    mutating func becomeProbe() {
        if case .snapshot(let index) = state {
            next = max(match.next, index.next)
        } else {
            next = match.next
        }
        state = .probe
        probeSent = false
        inflight = []
    }

    mutating func becomeReplicate() {
        state = .replicate
        next = match.next
        inflight = []
    }

    mutating func becomeSnapshot(index: LogIndex) {
        state = .snapshot(index: index)
        snapshotOffset = 0
        inflight = []
    }

    /// An accepted append up to `index`. Returns false if it told nothing new.
    mutating func acknowledged(_ index: LogIndex) -> Bool {
        var updated = false
        if index > match {
            match = index
            updated = true
            probeSent = false
        }
        next = max(next, index.next)
        inflight.removeAll { $0 <= index }
        return updated
    }

    /// A rejected append of `rejected` with the follower's last index `hint`. Returns true if `next` moved
    /// (a stale rejection, from before a newer accepted append, changes nothing).
    mutating func rejected(_ rejected: LogIndex, hint: LogIndex) -> Bool {
        if state == .replicate {
            guard rejected > match else { return false }
            becomeProbe()
            next = max(match.next, min(rejected, hint.next))
            return true
        }
        guard next.previous == rejected else { return false }
        next = max(LogIndex(1), max(match.next, min(rejected, hint.next)))
        probeSent = false
        return true
    }

    func isPaused(maxInflight: Int) -> Bool {
        switch state {
        case .probe: probeSent
        case .replicate: inflight.count >= maxInflight
        case .snapshot: true
        }
    }
}
