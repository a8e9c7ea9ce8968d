import Balancing
import Testing

@Suite("Slow start: a new backend's weight ramps linearly from 10% to 100%")
struct SlowStartTests {
    @Test("a backend added at 20 s takes 10%, then a growing share, then its full share at 30 s",
          arguments: [BalancingPolicy.roundRobin, .leastConnections, .random, .powerOfTwoChoices])
    func newBackendRamps(policy: BalancingPolicy) {
        let options = BalancingOptions(slowStartMillis: 10_000)
        let balancer = Balancer(policy: policy, options: options, backends: makeBackends(2), seed: 5, nowMillis: 0)
        balancer.update(backends: makeBackends(3), nowMillis: 20_000)
        let newcomer = balancer.states[2]
        #expect(newcomer.sinceMillis == 20_000)
        var measured: [String] = []
        for (millis, weight) in [(20_000, 0.1), (22_500, 0.325), (25_000, 0.55), (30_000, 1.0), (60_000, 1.0)] {
            let now = UInt64(millis)
            #expect(abs(balancer.effectiveWeight(of: newcomer, nowMillis: now) - weight) < 1e-9)
            let draws = 20_000
            let counts = balancer.shortConnections(draws, nowMillis: now)
            let expected = weight / (weight + 2)
            measured.append("\(millis / 1_000) s: \(formatted([shares(counts)[2]])) (\(formatted([expected])))")
            switch policy {
            case .roundRobin, .leastConnections: #expect(abs(shares(counts)[2] - expected) < 0.001)
            default: #expect(sigmas(counts[2], of: draws, share: expected) < 5)
            }
        }
        print("\(policy.rawValue), newcomer's share of 3 (slow start 10 s): \(measured.joined(separator: ", "))")
    }

    @Test("ip-hash ignores slow start, so a client's backend does not move while another ramps")
    func ipHashIgnoresSlowStart() {
        let options = BalancingOptions(slowStartMillis: 10_000)
        let balancer = Balancer(policy: .ipHash, options: options, backends: makeBackends(3), seed: 5, nowMillis: 0)
        let early = balancer.shortConnections(3_000, nowMillis: 0)
        let later = balancer.shortConnections(3_000, nowMillis: 20_000)
        #expect(early == later)
        #expect(early.allSatisfy { $0 > 800 })
    }

    @Test("backends present from the start ramp together, so their shares stay even")
    func initialBackendsRampTogether() {
        let options = BalancingOptions(slowStartMillis: 10_000)
        let balancer = Balancer(policy: .roundRobin, options: options, backends: makeBackends(3), seed: 5,
                                nowMillis: 0)
        #expect(balancer.shortConnections(300, nowMillis: 1_000) == [100, 100, 100])
    }
}
