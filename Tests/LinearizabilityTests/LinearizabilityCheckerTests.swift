import Linearizability
import Testing

@Suite("Linearizability checker (Wing–Gong with Lowe's memoization)")
struct LinearizabilityCheckerTests {
    typealias Op = Operation<RegisterModel.Input, RegisterModel.Output>
    let checker = LinearizabilityChecker(model: RegisterModel())

    static func op(_ client: Int, _ call: UInt64, _ returned: UInt64?, _ input: RegisterModel.Input, _ output: RegisterModel.Output?) -> Op {
        Op(client: client, call: call, returned: returned, input: input, output: output)
    }

    @Test("a sequential history that obeys the register is linearizable; one that reads a value never written is not")
    func sequential() {
        let good = [Self.op(0, 0, 1, .write("a"), .ok), Self.op(0, 2, 3, .read, .value("a")),
                    Self.op(0, 4, 5, .compareAndSet(expected: "a", new: "b"), .ok), Self.op(0, 6, 7, .read, .value("b"))]
        #expect(checker.check(good).isLinearizable)
        let bad = [Self.op(0, 0, 1, .write("a"), .ok), Self.op(0, 2, 3, .read, .value("z"))]
        #expect(!checker.check(bad).isLinearizable)
    }

    @Test("a read overlapping a write may see the old or the new value, but once the write returned only the new one")
    func staleRead() {
        for seen in [nil, "a"] as [String?] {
            let overlapping = [Self.op(0, 0, 10, .write("a"), .ok), Self.op(1, 5, 6, .read, .value(seen))]
            #expect(checker.check(overlapping).isLinearizable, "an overlapping read of \(seen ?? "∅")")
        }
        // The bug a follower serving reads from its own state shows: a read begun after the write returned sees
        // the value from before it.
        let stale = [Self.op(0, 0, 10, .write("a"), .ok), Self.op(1, 11, 12, .read, .value(nil))]
        guard case .notLinearizable(let stuck, _) = checker.check(stale) else {
            Issue.record("a stale read passed")
            return
        }
        #expect(stuck == 1)
        // Two reads in order may not see the values go back.
        let backwards = [Self.op(0, 0, 100, .write("a"), .ok), Self.op(1, 10, 20, .read, .value("a")), Self.op(2, 30, 40, .read, .value(nil))]
        #expect(!checker.check(backwards).isLinearizable)
    }

    @Test("two compare-and-sets from the same value cannot both succeed, whatever their overlap")
    func compareAndSet() {
        let both = [Self.op(0, 0, 10, .compareAndSet(expected: nil, new: "a"), .ok), Self.op(1, 1, 11, .compareAndSet(expected: nil, new: "b"), .ok)]
        #expect(!checker.check(both).isLinearizable)
        let one = [Self.op(0, 0, 10, .compareAndSet(expected: nil, new: "a"), .ok), Self.op(1, 1, 11, .compareAndSet(expected: nil, new: "b"), .failed)]
        #expect(checker.check(one).isLinearizable)
        // A failed compare-and-set must have seen another value.
        let failedOnMatch = [Self.op(0, 0, 1, .compareAndSet(expected: nil, new: "a"), .failed)]
        #expect(!checker.check(failedOnMatch).isLinearizable)
    }

    @Test("an operation whose outcome is unknown may have taken effect at any later moment, or never")
    func unknownOutcomes() {
        for seen in [nil, "a"] as [String?] {
            let history = [Self.op(0, 0, nil, .write("a"), nil), Self.op(1, 50, 60, .read, .value(seen))]
            #expect(checker.check(history).isLinearizable, "a read of \(seen ?? "∅") after a write that timed out")
        }
        // But not before its call.
        let early = [Self.op(1, 0, 10, .read, .value("a")), Self.op(0, 20, nil, .write("a"), nil)]
        #expect(!checker.check(early).isLinearizable)
        // Nor twice: once seen, it stays (no later read sees the old value again).
        let flicker = [Self.op(0, 0, nil, .write("a"), nil), Self.op(1, 10, 11, .read, .value("a")), Self.op(1, 12, 13, .read, .value(nil))]
        #expect(!checker.check(flicker).isLinearizable)
    }

    @Test("histories made by a linearizable register are accepted, and the same histories with one read made stale are refused (200 seeds)")
    func randomizedHistories() {
        var refusedMutations = 0
        for seed in 1...200 as ClosedRange<UInt64> {
            var random = Random(seed: seed)
            let history = Self.linearizableHistory(&random, clients: 4, operations: 40)
            let verdict = checker.check(history)
            #expect(verdict.isLinearizable, "seed \(seed): \(verdict)")
            // Make a completed read return a value that was overwritten before its call.
            if let mutated = Self.staleMutation(of: history) {
                if !checker.check(mutated).isLinearizable { refusedMutations += 1 } else { Issue.record("seed \(seed): a stale read passed") }
            }
        }
        #expect(refusedMutations >= 50, "enough stale reads were injected to mean something: \(refusedMutations)")
    }

    @Test("a long history with much concurrency is decided within the step budget")
    func longHistory() {
        var random = Random(seed: 7)
        let history = Self.linearizableHistory(&random, clients: 8, operations: 600)
        #expect(checker.check(history).isLinearizable)
    }

    // MARK: - Histories

    struct Random {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
    }

    /// `clients` clients each issue operations one after another against an atomic register; each takes effect at
    /// a random instant between its call and return. Some outcomes are then forgotten (as after a timeout).
    static func linearizableHistory(_ random: inout Random, clients: Int, operations: Int) -> [Op] {
        struct Pending { var client: Int; var call: UInt64; var effect: UInt64; var returned: UInt64; var input: RegisterModel.Input }
        var free = [UInt64](repeating: 0, count: clients)
        var pending: [Pending] = []
        for index in 0..<operations {
            let client = random.below(clients)
            let call = free[client] + UInt64(random.below(5))
            let effect = call + 1 + UInt64(random.below(20))
            let returned = effect + 1 + UInt64(random.below(20))
            free[client] = returned + 1
            let input: RegisterModel.Input
            switch random.below(3) {
            case 0: input = .read
            case 1: input = .write("v\(index)")
            default: input = .compareAndSet(expected: random.below(3) == 0 ? nil : "v\(max(0, index - 1 - random.below(4)))", new: "v\(index)")
            }
            pending.append(Pending(client: client, call: call, effect: effect, returned: returned, input: input))
        }
        // Effects in time order against one register.
        var value: String?
        var outputs = [RegisterModel.Output](repeating: .ok, count: pending.count)
        for index in pending.indices.sorted(by: { (pending[$0].effect, $0) < (pending[$1].effect, $1) }) {
            switch pending[index].input {
            case .read: outputs[index] = .value(value)
            case .write(let new): value = new; outputs[index] = .ok
            case .compareAndSet(let expected, let new):
                if value == expected { value = new; outputs[index] = .ok } else { outputs[index] = .failed }
            }
        }
        return pending.indices.map { index in
            let unknown = random.below(20) == 0 && pending[index].input != .read
            return Op(client: pending[index].client, call: pending[index].call, returned: unknown ? nil : pending[index].returned,
                      input: pending[index].input, output: unknown ? nil : outputs[index])
        }
    }

    /// The history with one read answering a stale value: a read that began after write W returned now returns
    /// the value of an earlier write W0 that returned before W was called (so W0 < W < the read in real time, and
    /// the value W0 wrote was overwritten before the read: values are unique). Nil when the history has no such
    /// triple.
    static func staleMutation(of history: [Op]) -> [Op]? {
        let writes = history.enumerated().compactMap { entry -> (value: String, call: UInt64, returned: UInt64)? in
            guard case .write(let value?) = entry.element.input, entry.element.output == .ok, let returned = entry.element.returned else { return nil }
            return (value, entry.element.call, returned)
        }
        for (readIndex, read) in history.enumerated() where read.input == .read && read.output != nil {
            for later in writes where later.returned < read.call {
                guard let earlier = writes.first(where: { $0.returned < later.call }), case .value(let seen)? = read.output,
                      seen != earlier.value else { continue }
                var mutated = history
                mutated[readIndex].output = .value(earlier.value)
                return mutated
            }
        }
        return nil
    }
}
