import Balancing
import Testing

@Suite("Outlier detection: consecutive failures eject a backend for a doubling time; it comes back gradually")
struct OutlierDetectionTests {
    /// Round robin over b0 and b1, ejections starting at 1 s.
    private func twoBackends(ejectAfterFailures: Int, maxEjectionMillis: UInt64) -> Balancer {
        let options = BalancingOptions(ejectAfterFailures: ejectAfterFailures, baseEjectionMillis: 1_000,
                                       maxEjectionMillis: maxEjectionMillis)
        return Balancer(policy: .roundRobin, options: options, backends: makeBackends(2), seed: 1, nowMillis: 0)
    }

    @Test("three failures in a row eject a backend; a success in between starts the count again")
    func ejectionAfterConsecutiveFailures() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(3), seed: 1, nowMillis: 0)
        let flaky = balancer.states[1]
        balancer.fail(1, times: 2, nowMillis: 100)
        balancer.succeeded(flaky, nowMillis: 100)
        balancer.fail(1, times: 2, nowMillis: 100)
        #expect(!flaky.isEjected(nowMillis: 100))
        #expect(flaky.consecutiveFailures == 2)

        balancer.failed(flaky, nowMillis: 100)
        #expect(flaky.isEjected(nowMillis: 100))
        #expect(flaky.ejections == 1)
        #expect(flaky.ejectedUntilMillis == 5_100)
        #expect(flaky.failures == 5)
        let counts = balancer.shortConnections(300, nowMillis: 200)
        #expect(counts == [150, 0, 150])
    }

    @Test("each further ejection of the same backend lasts twice as long, up to the maximum")
    func backoffDoublesUpToCap() {
        let balancer = twoBackends(ejectAfterFailures: 2, maxEjectionMillis: 4_000)
        let flaky = balancer.states[0]
        var now: UInt64 = 0
        var lengths: [UInt64] = []
        for _ in 0..<5 {
            balancer.fail(0, times: 2, nowMillis: now)
            let until = flaky.ejectedUntilMillis ?? now
            lengths.append(until - now)
            // Failing again while ejected changes nothing.
            balancer.fail(0, times: 2, nowMillis: now + 1)
            #expect(flaky.ejectedUntilMillis == until)
            now = until
        }
        print("ejection lengths (base 1 s, max 4 s): \(lengths)")
        #expect(lengths == [1_000, 2_000, 4_000, 4_000, 4_000])
        #expect(flaky.ejections == 5)
    }

    @Test("a backend that stays in service twice as long as its last ejection is forgiven: the next is short again")
    func longHealthForgivesBackoff() {
        let balancer = twoBackends(ejectAfterFailures: 1, maxEjectionMillis: 60_000)
        let flaky = balancer.states[0]
        balancer.failed(flaky, nowMillis: 0)  // out 0 → 1 s
        balancer.failed(flaky, nowMillis: 1_000)  // back at 1 s, out again → 3 s
        #expect(flaky.ejectedUntilMillis == 3_000)
        // Back at 3 s; a success at 4 s (in service 1 s < 2 × 2 s) forgives nothing.
        balancer.succeeded(flaky, nowMillis: 4_000)
        balancer.failed(flaky, nowMillis: 4_500)
        #expect(flaky.ejectedUntilMillis == 8_500)
        // Back at 8.5 s; a success 8 s later (2 × 4 s) forgives the streak.
        balancer.succeeded(flaky, nowMillis: 16_500)
        balancer.failed(flaky, nowMillis: 17_000)
        #expect(flaky.ejectedUntilMillis == 18_000)
    }

    @Test("a backend back from ejection ramps from 10% to its full weight over the slow start time")
    func returnRampsWithSlowStart() {
        let options = BalancingOptions(baseEjectionMillis: 5_000, slowStartMillis: 10_000)
        let balancer = Balancer(policy: .roundRobin, options: options, backends: makeBackends(2), seed: 1,
                                nowMillis: 0)
        let flaky = balancer.states[0]
        balancer.fail(0, times: 3, nowMillis: 20_000)  // out until 25 s
        var measured: [String] = []
        for (second, weight) in [(25, 0.1), (30, 0.55), (35, 1.0), (40, 1.0)] {
            let now = UInt64(second) * 1_000
            #expect(abs(balancer.effectiveWeight(of: flaky, nowMillis: now) - weight) < 1e-9)
            let share = shares(balancer.shortConnections(1_100, nowMillis: now))[0]
            measured.append("\(second) s: \(formatted([share]))")
            #expect(abs(share - weight / (weight + 1)) < 0.01)
        }
        print("returning backend's share of 2 (slow start 10 s): \(measured.joined(separator: ", "))")
        #expect(!flaky.isEjected(nowMillis: 25_000))
        #expect(flaky.sinceMillis == 25_000)
        #expect(flaky.ejectedUntilMillis == nil)
    }

    @Test("with slow start off, a backend back from ejection still ramps, over the base ejection time")
    func returnRampsWithoutSlowStart() {
        let balancer = Balancer(policy: .roundRobin, backends: makeBackends(2), seed: 1, nowMillis: 0)
        #expect(balancer.effectiveWeight(of: balancer.states[0], nowMillis: 0) == 1)
        balancer.fail(0, times: 3, nowMillis: 0)  // out until 5 s
        let ramp = [5_000, 7_500, 10_000].map { balancer.effectiveWeight(of: balancer.states[0], nowMillis: $0) }
        print("returning backend's effective weight at 5, 7.5, 10 s (slow start off): \(ramp)")
        #expect(ramp == [0.1, 0.55, 1])
    }

    @Test("when every backend is ejected, picks still answer from them (panic mode) and are counted")
    func panicModeWhenAllEjected() {
        let balancer = Balancer(policy: .leastConnections, backends: makeBackends(3), seed: 1, nowMillis: 0)
        balancer.fail(0, times: 3, nowMillis: 0)
        balancer.fail(1, times: 3, nowMillis: 0)
        #expect(balancer.shortConnections(10, nowMillis: 1) == [0, 0, 10])
        #expect(balancer.panicPicks == 0)
        balancer.fail(2, times: 3, nowMillis: 1)
        let counts = balancer.shortConnections(30, nowMillis: 2)
        print("all ejected, 30 connections: \(counts), panic picks \(balancer.panicPicks)")
        #expect(counts.reduce(0, +) == 30)
        #expect(balancer.panicPicks == 30)
    }

    @Test("ejectAfterFailures 0 turns outlier detection off")
    func detectionOff() {
        let balancer = Balancer(policy: .roundRobin, options: .init(ejectAfterFailures: 0), backends: makeBackends(2),
                                seed: 1, nowMillis: 0)
        balancer.fail(0, times: 100, nowMillis: 0)
        #expect(!balancer.states[0].isEjected(nowMillis: 0))
        #expect(balancer.states[0].consecutiveFailures == 100)
    }
}
