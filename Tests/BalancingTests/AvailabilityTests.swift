import Balancing
import Testing

@Suite("Availability: draining, connection limits, avoided and ejected backends, locality")
struct AvailabilityTests {
    @Test("a draining backend (weight 0) gets nothing new while its open connections finish",
          arguments: BalancingPolicy.allCases)
    func drainingGetsNothingNew(policy: BalancingPolicy) {
        let balancer = Balancer(policy: policy, backends: makeBackends(3), seed: 1, nowMillis: 0)
        balancer.hold(1, connections: 2)
        var draining = makeBackends(3)
        draining[1].weight = 0
        balancer.update(backends: draining, nowMillis: 0)
        let counts = balancer.shortConnections(3_000)
        #expect(counts[1] == 0)
        #expect(counts[0] + counts[2] == 3_000)
        balancer.closed(balancer.states[1])
        balancer.closed(balancer.states[1])
        #expect(balancer.states[1].active == 0)
    }

    @Test("nothing is picked when every backend drains, and none when there are none")
    func nothingToPick() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(2, weights: [0, 0]), seed: 1,
                                nowMillis: 0)
        #expect(balancer.pickPosition() == -1)
        let empty = Balancer(policy: .ipHash, backends: [], seed: 1, nowMillis: 0)
        #expect(empty.pickPosition() == -1)
    }

    @Test("maxConnections caps a backend's active connections; when all are full nothing is picked",
          arguments: BalancingPolicy.allCases)
    func connectionLimit(policy: BalancingPolicy) {
        let balancer = Balancer(policy: policy, backends: makeBackends(3, maxConnections: 2), seed: 1, nowMillis: 0)
        var held: [Int] = []
        for client in 0..<6 {
            let index = balancer.pickPosition(client: client)
            held.append(index)
            balancer.hold(index)
        }
        #expect(held.sorted() == [0, 0, 1, 1, 2, 2])
        #expect(balancer.pickPosition(client: 7) == -1)
        balancer.closed(balancer.states[1])
        #expect(balancer.pickPosition(client: 7) == 1)
    }

    @Test("a retry avoids the backends this connection failed on while any other remains",
          arguments: BalancingPolicy.allCases)
    func avoidingFailedBackends(policy: BalancingPolicy) {
        let balancer = Balancer(policy: policy, backends: makeBackends(3), seed: 1, nowMillis: 0)
        let avoiding = [balancer.states[0], balancer.states[2]]
        for client in 0..<50 {
            #expect(balancer.pickPosition(client: client, avoiding: avoiding) == 1)
        }
        // All avoided: the connection still gets one of them rather than an error.
        #expect(balancer.pickPosition(avoiding: balancer.states) != -1)
    }

    @Test("an ejected backend is preferred over one this connection already failed on, and both over nothing")
    func avoidedRanksBelowEjected() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(2), seed: 1, nowMillis: 0)
        balancer.fail(0, times: 3, nowMillis: 0)
        #expect(balancer.pickPosition(nowMillis: 1, avoiding: [balancer.states[1]]) == 0)
        #expect(balancer.panicPicks == 1)
        #expect(balancer.pickPosition(nowMillis: 1, avoiding: balancer.states) == 1)
    }

    @Test("preferLocal chooses among this node's backends while any can take the connection",
          arguments: BalancingPolicy.allCases)
    func preferLocal(policy: BalancingPolicy) {
        let options = BalancingOptions(preferLocal: true)
        let backends = makeBackends(4, local: [1, 3], maxConnections: 1_000)
        let balancer = Balancer(policy: policy, options: options, backends: backends, seed: 1, nowMillis: 0)
        let local = balancer.shortConnections(1_000)
        print("\(policy.rawValue), preferLocal, b1 and b3 local: \(local)")
        #expect(local[0] == 0 && local[2] == 0)
        #expect(local[1] > 0 && local[3] > 0)

        // Local ones ejected or full: remote ones take over rather than panic mode.
        balancer.fail(1, times: 3, nowMillis: 0)
        balancer.hold(3, connections: 1_000)
        let remote = balancer.shortConnections(1_000, nowMillis: 1)
        #expect(remote[1] == 0 && remote[3] == 0)
        #expect(remote[0] + remote[2] == 1_000)
        #expect(balancer.panicPicks == 0)

        let anywhere = Balancer(policy: policy, backends: backends, seed: 1, nowMillis: 0).shortConnections(1_000)
        #expect(anywhere.allSatisfy { $0 > 0 })
    }
}
