import Balancing
import Testing

@Suite("Pick cost: measured and printed, never asserted")
struct PickCostTests {
    @Test("every policy answers 200,000 picks over 10 backends, steady and ramping (time per pick printed)",
          arguments: BalancingPolicy.allCases)
    func pickCost(policy: BalancingPolicy) {
        for slowStartMillis: UInt64 in [0, 1_000_000] {
            let picks = 200_000
            let balancer = Balancer(policy: policy, options: .init(slowStartMillis: slowStartMillis),
                                    backends: makeBackends(10), seed: 9, nowMillis: 0)
            var answered = 0
            let elapsed = ContinuousClock().measure {
                for client in 0..<picks {
                    guard let state = balancer.pick(clientHash: UInt64(client) &* 0x9E37_79B9_7F4A_7C15,
                                                    nowMillis: UInt64(client / 100)) else { continue }
                    balancer.opened(state)
                    balancer.closed(state)
                    answered += 1
                }
            }
            let nanoseconds = Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9
            print("\(policy.rawValue): \(Int(nanoseconds / Double(picks))) ns per pick, open and close "
                  + "(10 backends, \(slowStartMillis == 0 ? "steady" : "all ramping"))")
            #expect(answered == picks)
        }
    }
}
