import Synchronization

/// A connection (HTTP: a request) waiting for a backend of a service that has none (it scaled to zero): it is
/// not read from meanwhile (TCP; HTTP reads no further than its request), and its own timer ends the wait at
/// the service's hold timeout.
protocol HeldConnection: AnyObject {
    /// The wait is over before the timeout.
    func holdEnded(_ ending: HoldEnding)
}

/// How a wait ends before its timeout.
enum HoldEnding {
    /// A backend appeared: go on as a new connection (request) would.
    case forward
    /// The service is gone, or holds no more: refuse as a connection finding no backend is refused.
    case refuse
}

/// How many connections one service port holds on this node, over all its event loops: the queue limit is per
/// port, and the first held connection tells the node at once (to ask the leader for a replica).
final class HoldCount: Sendable {
    private let count = Atomic<Int>(0)
    private let firstHeld: @Sendable () -> Void

    init(firstHeld: @escaping @Sendable () -> Void) {
        self.firstHeld = firstHeld
    }

    /// Connections held now.
    var value: Int { count.load(ordering: .relaxed) }

    /// Counts one more held connection unless `limit` are held already.
    func take(limit: Int) -> Bool {
        var current = count.load(ordering: .relaxed)
        while current < limit {
            let (exchanged, original) = count.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
            if exchanged {
                if original == 0 { firstHeld() }
                return true
            }
            current = original
        }
        return false
    }

    /// `released` connections are held no more.
    func give(_ released: Int) {
        count.subtract(released, ordering: .relaxed)
    }
}
