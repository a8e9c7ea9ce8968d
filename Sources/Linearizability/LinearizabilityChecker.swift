/// Decides whether a concurrent history is linearizable: whether every operation can be given one instant
/// between its call and its return such that, taken in that order, the operations obey the sequential model.
///
/// The search is Wing and Gong's, with Lowe's memoization (as in Knossos and Porcupine): walk the history's calls
/// and returns in time order; at a call, try to linearize that operation now (apply it to the model and take it
/// out of the history); at a return whose operation is not linearized yet, undo the last choice and try the next.
/// A pair (set of linearized operations, model state) already explored is never explored again, which keeps
/// real histories fast. Operations without a return end after everything else, and may never take effect.
///
/// Histories of independent objects (a key-value store's keys) are checked one object at a time by the caller:
/// linearizability is compositional, and small histories are what keeps the search short.
public struct LinearizabilityChecker<Model: SequentialModel>: Sendable {
    public typealias Op = Operation<Model.Input, Model.Output>

    public enum Verdict: Sendable {
        case linearizable
        /// No order exists. `stuck` is the operation that could not be placed in the deepest attempt (it
        /// returned before any order of what came before could take it), with `placed` the operations linearized
        /// before it in that attempt, in order: enough to see the anomaly.
        case notLinearizable(stuck: Int, placed: [Int])
        /// The search took more than its step budget.
        case undecided
    }

    public let model: Model
    /// Bounds the search (each step tries one operation at one point).
    public let maxSteps: Int

    public init(model: Model, maxSteps: Int = 5_000_000) {
        self.model = model
        self.maxSteps = maxSteps
    }

    /// The history's calls and returns as a doubly linked list in time order (calls before returns at equal
    /// times, so operations that touch are taken as concurrent).
    private struct Entry {
        var operation: Int
        var isCall: Bool
        var previous: Int
        var next: Int
        /// For a call, its return's entry.
        var match: Int
    }

    /// A choice the search may undo: the call linearized, the state before it, which outcome it took.
    private struct Choice {
        var call: Int
        var state: Model.State
        var alternative: Int
    }

    /// A point of the search: which operations are linearized, and the model's state after them.
    private struct Explored: Hashable {
        var linearized: [UInt64]
        var state: Model.State
    }

    public func check(_ history: [Op]) -> Verdict {
        if history.isEmpty { return .linearizable }
        let never = UInt64.max
        var events: [(time: UInt64, isCall: Bool, operation: Int)] = []
        for (index, operation) in history.enumerated() {
            events.append((operation.call, true, index))
            events.append((max(operation.returned ?? never, operation.call), false, index))
        }
        events.sort { ($0.time, $0.isCall ? 0 : 1, $0.operation) < ($1.time, $1.isCall ? 0 : 1, $1.operation) }

        // Entry 0 is the list's head; entries 1... the events.
        var entries = [Entry(operation: -1, isCall: false, previous: -1, next: 1, match: -1)]
        var callEntry = [Int](repeating: 0, count: history.count)
        for (position, event) in events.enumerated() {
            let index = position + 1
            entries.append(Entry(operation: event.operation, isCall: event.isCall, previous: index - 1,
                                 next: position + 1 < events.count ? index + 1 : -1, match: -1))
            if event.isCall { callEntry[event.operation] = index } else { entries[callEntry[event.operation]].match = index }
        }

        func lift(_ call: Int) {
            let ret = entries[call].match
            entries[entries[call].previous].next = entries[call].next
            if entries[call].next >= 0 { entries[entries[call].next].previous = entries[call].previous }
            entries[entries[ret].previous].next = entries[ret].next
            if entries[ret].next >= 0 { entries[entries[ret].next].previous = entries[ret].previous }
        }
        func unlift(_ call: Int) {
            let ret = entries[call].match
            entries[entries[ret].previous].next = ret
            if entries[ret].next >= 0 { entries[entries[ret].next].previous = ret }
            entries[entries[call].previous].next = call
            if entries[call].next >= 0 { entries[entries[call].next].previous = call }
        }

        var linearized = [UInt64](repeating: 0, count: (history.count + 63) / 64)
        var explored: Set<Explored> = []
        var stack: [Choice] = []
        var state = model.initial
        var entry = entries[0].next
        var firstAlternative = 0
        var steps = 0
        var deepest: (placed: [Int], stuck: Int) = ([], -1)

        while entries[0].next >= 0 {
            steps += 1
            if steps > maxSteps { return .undecided }
            let current = entries[entry]
            if current.isCall {
                let operation = history[current.operation]
                let outcomes = model.step(state, operation.input, operation.output)
                var advanced = false
                var alternative = firstAlternative
                firstAlternative = 0
                while alternative < outcomes.count {
                    var next = linearized
                    next[current.operation / 64] |= 1 << UInt64(current.operation % 64)
                    if explored.insert(Explored(linearized: next, state: outcomes[alternative])).inserted {
                        stack.append(Choice(call: entry, state: state, alternative: alternative))
                        state = outcomes[alternative]
                        linearized = next
                        lift(entry)
                        entry = entries[0].next
                        advanced = true
                        break
                    }
                    alternative += 1
                }
                if !advanced { entry = current.next }
            } else {
                // A return whose operation could not be placed before it: undo the last choice.
                if stack.count >= deepest.placed.count {
                    deepest = (stack.map { entries[$0.call].operation }, current.operation)
                }
                guard let choice = stack.popLast() else {
                    return .notLinearizable(stuck: deepest.stuck, placed: deepest.placed)
                }
                let operation = entries[choice.call].operation
                linearized[operation / 64] &= ~(1 << UInt64(operation % 64))
                state = choice.state
                unlift(choice.call)
                entry = choice.call
                firstAlternative = choice.alternative + 1
            }
        }
        return .linearizable
    }
}

extension LinearizabilityChecker.Verdict: CustomStringConvertible {
    public var description: String {
        switch self {
        case .linearizable: "linearizable"
        case .notLinearizable(let stuck, let placed): "not linearizable: operation \(stuck) fits nowhere after \(placed)"
        case .undecided: "undecided (step budget exhausted)"
        }
    }

    public var isLinearizable: Bool { if case .linearizable = self { true } else { false } }
}
