import Balancing
import Testing

@Suite("Policies: how each spreads connections over its backends")
struct PolicyDistributionTests {
    @Test("round robin rotates equal backends strictly in table order, for 3 to 10 backends")
    func roundRobinRotates() {
        for count in 3...10 {
            let balancer = Balancer(policy: .roundRobin, backends: makeBackends(count), seed: 1, nowMillis: 0)
            let order = (0..<2 * count).map { _ in balancer.pickPosition() }
            #expect(order == Array(0..<count) + Array(0..<count))
            let counts = balancer.shortConnections(100 * count)
            print("round robin, \(count) backends, \(100 * count) connections: \(counts)")
            #expect(counts == [Int](repeating: 100, count: count))
        }
    }

    @Test("smooth weighted round robin interleaves weights 5:1:1 as a a b a c a a, as NGINX does")
    func smoothWeightedRoundRobinInterleaves() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(3, weights: [5, 1, 1]), seed: 1,
                                nowMillis: 0)
        let order = (0..<14).map { _ in balancer.pickPosition() }
        #expect(order == [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0])
    }

    @Test("least connections with short connections rotates equal backends evenly, for 3 to 10 backends")
    func leastConnectionsRotatesWhenIdle() {
        for count in 3...10 {
            let balancer = Balancer(policy: .leastConnections, backends: makeBackends(count), seed: 1, nowMillis: 0)
            let counts = balancer.shortConnections(100 * count)
            print("least connections (short connections), \(count) backends: \(counts)")
            #expect(counts == [Int](repeating: 100, count: count))
        }
    }

    @Test("least connections with connections held open fills the emptiest backend, rotating among equals")
    func leastConnectionsFillsEmptiest() {
        let balancer = Balancer(policy: .leastConnections, backends: makeBackends(3), seed: 1, nowMillis: 0)
        balancer.hold(0, connections: 2)
        var order: [Int] = []
        for _ in 0..<7 {
            let index = balancer.pickPosition()
            order.append(index)
            balancer.hold(index)
        }
        // b1 and b2 catch up with b0 before b0 takes another; then all three take one each.
        #expect(order.firstIndex(of: 0) == 4)
        #expect(Set(order.prefix(4)) == [1, 2])
        #expect(balancer.states.map(\.active) == [3, 3, 3])
    }

    @Test("random and power of two choices spread evenly within 5 standard deviations, for 3 to 10 backends",
          arguments: [BalancingPolicy.random, .powerOfTwoChoices])
    func randomPoliciesSpreadEvenly(policy: BalancingPolicy) {
        let draws = 60_000
        for count in 3...10 {
            let balancer = Balancer(policy: policy, backends: makeBackends(count), seed: 42, nowMillis: 0)
            let counts = balancer.shortConnections(draws)
            let worst = counts.map { sigmas($0, of: draws, share: 1 / Double(count)) }.max()!
            print("\(policy.rawValue), \(count) backends, \(draws) connections: \(counts), worst \(worst) σ")
            #expect(worst < 5)
        }
    }

    @Test("weights 1:2:3 give shares 1/6, 2/6, 3/6: exactly for the rotating policies, within bounds for the others",
          arguments: BalancingPolicy.allCases)
    func weightsGiveProportionalShares(policy: BalancingPolicy) {
        let draws = 60_000
        let balancer = Balancer(policy: policy, backends: makeBackends(3, weights: [1, 2, 3]), seed: 7, nowMillis: 0)
        let counts = balancer.shortConnections(draws)
        print("\(policy.rawValue), weights 1:2:3, \(draws) connections: \(counts) = \(formatted(shares(counts)))")
        switch policy {
        case .roundRobin, .leastConnections:
            #expect(counts == [10_000, 20_000, 30_000])
        case .random, .powerOfTwoChoices:
            for (index, count) in counts.enumerated() {
                #expect(sigmas(count, of: draws, share: Double(index + 1) / 6) < 5)
            }
        case .ipHash:
            // Maglev gives weights approximately: within 2 points of each share.
            for (index, share) in shares(counts).enumerated() {
                #expect(abs(share - Double(index + 1) / 6) < 0.02)
            }
        }
    }

    @Test("power of two choices sends everything to the idle one of two backends")
    func powerOfTwoChoicesPrefersIdle() {
        let balancer = Balancer(policy: .powerOfTwoChoices, backends: makeBackends(2), seed: 3, nowMillis: 0)
        balancer.hold(0, connections: 5)
        let picks = (0..<100).map { _ in balancer.pickPosition() }
        #expect(picks == [Int](repeating: 1, count: 100))
    }

    @Test("with one slow backend, least connections and p2c send it far less than round robin and random",
          arguments: BalancingPolicy.allCases.filter { $0 != .ipHash })
    func slowBackendIsAvoided(policy: BalancingPolicy) {
        // One connection arrives per tick; b0's connections last 20 ticks, the others' 1 tick.
        let balancer = Balancer(policy: policy, backends: makeBackends(3), seed: 11, nowMillis: 0)
        var closing: [[BackendState]] = Array(repeating: [], count: 3_020)
        var counts = [0, 0, 0]
        for tick in 0..<3_000 {
            for state in closing[tick] { balancer.closed(state) }
            guard let state = balancer.pick(clientHash: 0, nowMillis: UInt64(tick)) else { continue }
            balancer.opened(state)
            let index = balancer.position(of: state)
            counts[index] += 1
            closing[tick + (index == 0 ? 20 : 1)].append(state)
        }
        let slowShare = shares(counts)[0]
        print("\(policy.rawValue), b0 slow (20 ticks vs 1): \(counts), slow share \(formatted([slowShare]))")
        switch policy {
        case .roundRobin: #expect(counts == [1_000, 1_000, 1_000])
        case .random: #expect(sigmas(counts[0], of: 3_000, share: 1.0 / 3) < 5)
        case .leastConnections, .powerOfTwoChoices: #expect(slowShare < 0.1)
        case .ipHash: break
        }
    }
}
