import ClusterModel
import Testing
@testable import Raft

/// Thousands of seeded runs of whole clusters under message loss, duplication, reordering, partitions,
/// crashes and restarts from persisted state. A failure prints its seed; rerun that seed alone to replay it
/// (`Simulation(seed:members:)` is fully deterministic).
@Suite("Raft simulation")
struct SimulationTests {
    /// Runs each seed to the end. Yields between seeds: these loops are CPU-bound and would otherwise hold a
    /// cooperative thread for a minute, starving the timing-sensitive tests that run beside them.
    static func runSeeds(_ seeds: Range<UInt64>, members: Int, steps: Int, snapshotEvery: UInt64 = 0) async -> (failures: [String], acknowledged: Int, leaders: Int) {
        var failures: [String] = []
        var acknowledged = 0
        var leaders = 0
        for seed in seeds {
            await Task.yield()
            var simulation = Simulation(seed: seed, members: members, snapshotEvery: snapshotEvery)
            simulation.run(steps: steps)
            simulation.stabilize()
            simulation.checkNoAcknowledgedLoss()
            if !simulation.converged() {
                simulation.fail("did not converge after healing: acknowledged \(simulation.acknowledged.count), applied \(simulation.ids.map { "\($0)=\(simulation.machines[$0]!.lastIndex)" })")
            }
            failures += simulation.failures.prefix(3)
            acknowledged += simulation.acknowledged.count
            leaders += simulation.leadersByTerm.count
        }
        return (failures, acknowledged, leaders)
    }

    @Test("3-member clusters stay safe and lose no acknowledged write under 2,000 seeds of faults")
    func threeMembers() async {
        let result = await Self.runSeeds(0..<2_000, members: 3, steps: 1_500)
        #expect(result.failures.count == 0, "\(result.failures.prefix(5).joined(separator: "\n"))")
        // The runs did real work: many writes acknowledged, many elections.
        #expect(result.acknowledged > 10_000)
        #expect(result.leaders > 2_000)
    }

    @Test("5-member clusters stay safe and lose no acknowledged write under 1,000 seeds of faults")
    func fiveMembers() async {
        let result = await Self.runSeeds(10_000..<11_000, members: 5, steps: 2_000)
        #expect(result.failures.count == 0, "\(result.failures.prefix(5).joined(separator: "\n"))")
        #expect(result.acknowledged > 4_000)
    }

    @Test("with snapshots and log compaction, followers catch up through InstallSnapshot and stay safe")
    func withSnapshots() async {
        let result = await Self.runSeeds(20_000..<21_000, members: 3, steps: 2_000, snapshotEvery: 7)
        #expect(result.failures.count == 0, "\(result.failures.prefix(5).joined(separator: "\n"))")
        #expect(result.acknowledged > 1_000)
    }
}
