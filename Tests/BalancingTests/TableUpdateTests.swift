import Balancing
import Testing

@Suite("Table updates: state is kept by backend id; new backends slow start; removed ones keep accounting")
struct TableUpdateTests {
    @Test("an update keeps active counts, failures and ejections by id, whatever the new order")
    func stateKeptByID() {
        let balancer = Balancer(policy: .leastConnections, backends: makeBackends(3), seed: 1, nowMillis: 0)
        balancer.hold(0, connections: 4)
        balancer.fail(1, times: 3, nowMillis: 0)
        let first = balancer.states[0]
        balancer.update(backends: makeBackends(3).reversed(), nowMillis: 1_000)
        #expect(balancer.states.map(\.backend.id) == ["b2", "b1", "b0"])
        #expect(balancer.states[2] === first)
        #expect(balancer.states[2].active == 4)
        #expect(balancer.states[1].isEjected(nowMillis: 1_000))
        #expect(balancer.states[1].ejections == 1)
        #expect(balancer.states[2].sinceMillis == 0)
    }

    @Test("a backend added by an update starts its slow start then, and ramps while the others don't")
    func newBackendSlowStartsAtUpdate() {
        let options = BalancingOptions(slowStartMillis: 10_000)
        let balancer = Balancer(policy: .roundRobin, options: options, backends: makeBackends(1), seed: 1,
                                nowMillis: 0)
        balancer.update(backends: makeBackends(2), nowMillis: 50_000)
        #expect(balancer.states[1].sinceMillis == 50_000)
        #expect(balancer.effectiveWeight(of: balancer.states[0], nowMillis: 50_000) == 1)
        #expect(balancer.effectiveWeight(of: balancer.states[1], nowMillis: 50_000) == 0.1)
    }

    @Test("a removed backend leaves the table; its connections still close against it, and it resumes if re-added")
    func removedBackendKeepsAccounting() {
        let balancer = Balancer(policy: .leastConnections, backends: makeBackends(3), seed: 1, nowMillis: 0)
        balancer.hold(2, connections: 2)
        let leaving = balancer.states[2]
        balancer.update(backends: makeBackends(2), nowMillis: 1_000)
        #expect(!leaving.inTable)
        #expect(balancer.states.count == 2)
        #expect(balancer.shortConnections(100).reduce(0, +) == 100)
        balancer.closed(leaving)
        #expect(leaving.active == 1)

        balancer.update(backends: makeBackends(3), nowMillis: 2_000)
        #expect(balancer.states[2] === leaving)
        #expect(leaving.inTable)
        #expect(leaving.sinceMillis == 2_000)
        // Its remaining connection still counts: least connections fills the others first.
        #expect(balancer.pickPosition() != 2)
    }

    @Test("an undrained backend re-enters service with slow start")
    func undrainedBackendSlowStarts() {
        let options = BalancingOptions(slowStartMillis: 10_000)
        var backends = makeBackends(2)
        backends[1].weight = 0
        let balancer = Balancer(policy: .roundRobin, options: options, backends: backends, seed: 1, nowMillis: 0)
        balancer.update(backends: makeBackends(2), nowMillis: 40_000)
        #expect(balancer.states[1].sinceMillis == 40_000)
        #expect(balancer.states[0].sinceMillis == 0)
    }

    @Test("a table update every second keeps the rotation fair rather than restarting it at the first backend",
          arguments: [BalancingPolicy.roundRobin, .leastConnections])
    func frequentUpdatesKeepFairness(policy: BalancingPolicy) {
        let balancer = Balancer(policy: policy, backends: makeBackends(3), seed: 1, nowMillis: 0)
        var counts = [0, 0, 0]
        for second in 1...300 {
            counts[balancer.shortConnections(1, nowMillis: UInt64(second) * 1_000).firstIndex(of: 1)!] += 1
            balancer.update(backends: makeBackends(3), nowMillis: UInt64(second) * 1_000)
        }
        print("\(policy.rawValue), one connection and one table update a second for 300 s: \(counts)")
        #expect(counts == [100, 100, 100])
    }

    @Test("changing options by update takes effect for the next pick")
    func optionsUpdate() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(2, local: [1]), seed: 1, nowMillis: 0)
        balancer.update(backends: makeBackends(2, local: [1]), options: .init(preferLocal: true), nowMillis: 0)
        #expect(balancer.options.preferLocal)
        #expect(balancer.shortConnections(10) == [0, 10])
    }
}
