/// Which of the indices 0..<capacity are taken, handing out the lowest free one: the bookkeeping under
/// `SubnetAllocator` and `TaskAddressAllocator`. Deterministic: the same taken set always gives the same answer.
struct LowestFreeIndex: Equatable, Sendable {
    let capacity: UInt64
    private(set) var taken: Set<UInt64> = []
    /// Invariant: every index below it is taken, so the search starts there (allocating in order is O(1)).
    private var searchFrom: UInt64 = 0

    init(capacity: UInt64) { self.capacity = capacity }

    static func == (lhs: LowestFreeIndex, rhs: LowestFreeIndex) -> Bool {
        lhs.capacity == rhs.capacity && lhs.taken == rhs.taken
    }

    /// The lowest free index, now taken; nil when all are.
    mutating func take() -> UInt64? {
        var index = searchFrom
        while index < capacity, taken.contains(index) { index += 1 }
        searchFrom = index
        guard index < capacity else { return nil }
        taken.insert(index)
        searchFrom = index + 1
        return index
    }

    /// Marks `index` taken; false when it already was.
    mutating func claim(_ index: UInt64) -> Bool {
        taken.insert(index).inserted
    }

    /// Frees `index`; false when it was not taken.
    mutating func release(_ index: UInt64) -> Bool {
        guard taken.remove(index) != nil else { return false }
        searchFrom = min(searchFrom, index)
        return true
    }
}
