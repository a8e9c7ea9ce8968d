/// Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer",
/// NSDI 2016, §3.4): a lookup table of prime size where every backend fills entries in the order of its own
/// permutation, taking turns, so each gets an almost equal share and adding or removing one backend of N moves
/// about 1/N of the entries. Weighted as Envoy does: a backend takes a turn per round in proportion to its weight.
///
/// The members are the table's backends with weight > 0, sorted by id, so every node builds the same table from
/// the same backend set, whatever order the table lists them in. Slow start, ejection and limits don't change it
/// (the balancer falls through to another entry instead), which keeps clients where they are.
struct MaglevTable {
    /// What the table was built from; the same key means the same table.
    struct Member: Equatable {
        var id: String
        var weight: UInt32
    }

    let key: [Member]
    /// The members' states, in `key` order (entries index into it).
    private(set) var states: [BackendState]
    /// `BalancingOptions.hashTableSize` when it was built.
    let requestedSize: Int
    /// Prime, so every skip in 1..<size walks a full permutation.
    let size: Int
    private var entries: [UInt16]

    /// Members above this many are left out: entries are 16-bit.
    static let maximumMembers = Int(UInt16.max)
    static let defaultSize = 65_537

    static func key(of states: [BackendState]) -> [Member] {
        members(of: states).map { Member(id: $0.backend.id, weight: $0.backend.weight) }
    }

    private static func members(of states: [BackendState]) -> [BackendState] {
        let members = states.filter { $0.inTable && $0.backend.weight > 0 }
            .sorted { ($0.backend.id, $0.backend.weight) < ($1.backend.id, $1.backend.weight) }
        return Array(members.prefix(maximumMembers))
    }

    init(states all: [BackendState], requestedSize: Int) {
        let states = Self.members(of: all)
        self.states = states
        key = states.map { Member(id: $0.backend.id, weight: $0.backend.weight) }
        self.requestedSize = requestedSize
        size = Self.prime(atLeast: max(requestedSize, 2))
        let empty = UInt16.max
        entries = [UInt16](repeating: empty, count: states.isEmpty ? 0 : size)
        guard !states.isEmpty else { return }

        let weights = states.map { Int(min($0.backend.weight, BackendState.maximumWeight)) }
        let heaviest = weights.max()!
        var next = states.map { StableHash.reduce($0.idHash, into: size) }
        let skips = states.map { 1 + StableHash.reduce($0.idSkipHash, into: size - 1) }
        var credit = [Int](repeating: 0, count: states.count)
        var filled = 0
        fill: while true {
            for member in states.indices {
                // A turn per round for the heaviest, proportionally fewer for lighter members.
                credit[member] += weights[member]
                guard credit[member] >= heaviest else { continue }
                credit[member] -= heaviest
                var slot = next[member]
                while entries[slot] != empty {
                    slot += skips[member]
                    if slot >= size { slot -= size }
                }
                entries[slot] = UInt16(member)
                next[member] = slot
                filled += 1
                if filled == size { break fill }
            }
        }
    }

    /// Points the table at the current states after an update that kept the same members (same ids, same weights).
    mutating func rebind(to all: [BackendState]) {
        states = Self.members(of: all)
    }

    /// The backend whose entry `hash` falls on.
    @inline(__always)
    func state(for hash: UInt64) -> BackendState? {
        guard !entries.isEmpty else { return nil }
        return states[Int(entries[StableHash.reduce(hash, into: size)])]
    }

    /// The smallest prime ≥ `value` (trial division: table sizes are small and this runs only on rebuild).
    static func prime(atLeast value: Int) -> Int {
        var candidate = max(value, 2)
        while !isPrime(candidate) { candidate += 1 }
        return candidate
    }

    private static func isPrime(_ value: Int) -> Bool {
        if value < 4 { return value >= 2 }
        if value % 2 == 0 { return false }
        var divisor = 3
        while divisor * divisor <= value {
            if value % divisor == 0 { return false }
            divisor += 2
        }
        return true
    }
}
