import ClusterModel
import Testing
@testable import Raft

/// Seeds that once failed, kept as regressions, replayed with the faults they were found under. To replay
/// any seed, add it here.
@Suite("Raft simulation replays")
struct ReplayTests {
    @Test("seed 20058 (snapshot installed over a log holding stale entries past it)", arguments: [UInt64(20058)])
    func replaySnapshotSeed(seed: UInt64) {
        var simulation = Simulation(seed: seed, members: 3, faults: .classic, snapshotEvery: 7)
        simulation.run(steps: 2_000)
        simulation.stabilize()
        simulation.checkNoAcknowledgedLoss()
        #expect(simulation.failures.isEmpty, "\(simulation.failures.prefix(3))")
        #expect(simulation.converged())
    }

    @Test("seed 10156 (a follower whose whole in-flight window of appends was lost must still catch up)")
    func replayLostWindow() {
        var simulation = Simulation(seed: 10156, members: 5, faults: .classic)
        simulation.run(steps: 2_000)
        simulation.stabilize()
        simulation.checkNoAcknowledgedLoss()
        #expect(simulation.failures.isEmpty, "\(simulation.failures.prefix(3))")
        #expect(simulation.converged())
    }
}
