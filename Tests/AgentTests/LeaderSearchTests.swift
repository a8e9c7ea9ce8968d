@testable import Agent
import Testing

/// How an agent finds the leader: straight to the one a follower names, never back to one that just went away
/// while others may answer, and a backoff only after a whole round found no leader.
@Suite("Agent: finding the leader")
struct LeaderSearchTests {
    let controllers = ["a:1", "b:1", "c:1"]

    /// The next attempt (mutating calls cannot sit inside #expect).
    static func step(_ search: inout LeaderSearch, _ controllers: [String]) throws -> (target: String, backOff: Bool) {
        let next = search.next(controllers: controllers)
        return try #require(next)
    }

    @Test("the first round tries each controller in turn without waiting; the next round backs off first")
    func rounds() throws {
        var search = LeaderSearch()
        var tried: [String] = []
        for _ in 0..<3 {
            let (target, backOff) = try Self.step(&search, controllers)
            #expect(!backOff)
            tried.append(target)
            search.answered(target, leader: nil)  // no leader yet (an election)
        }
        #expect(tried == controllers)
        #expect(try Self.step(&search, controllers).backOff)
    }

    @Test("a follower's hint is followed at once, unless it names a controller that is unreachable")
    func hints() throws {
        var search = LeaderSearch()
        #expect(try Self.step(&search, controllers).target == "a:1")
        search.answered("a:1", leader: "c:1")
        #expect(try Self.step(&search, controllers).target == "c:1")
        search.sessionEnded(with: "c:1")  // c led, then died; a has not noticed yet and still names it
        let next = try Self.step(&search, controllers)
        #expect(!next.backOff, "a lost session starts a new round at once")
        #expect(next.target == "a:1")
        search.answered("a:1", leader: "c:1")
        #expect(try Self.step(&search, controllers).target == "b:1", "the stale hint is ignored")
    }

    @Test("an unreachable controller is left out of two rounds in three while others answer, and tried when it is the only one")
    func suspects() throws {
        var search = LeaderSearch()
        search.sessionEnded(with: "a:1")
        var rounds: [[String]] = []
        for size in [2, 2, 3] {
            var round: [String] = []
            for _ in 0..<size {
                let target = try Self.step(&search, controllers).target
                round.append(target)
                if target == "a:1" { search.failed(target) } else { search.answered(target, leader: nil) }
            }
            rounds.append(round)
        }
        #expect(rounds == [["b:1", "c:1"], ["b:1", "c:1"], ["b:1", "c:1", "a:1"]])

        var alone = LeaderSearch()
        alone.sessionEnded(with: "a:1")
        #expect(try Self.step(&alone, ["a:1"]).target == "a:1")
        alone.failed("a:1")
        #expect(try Self.step(&alone, ["a:1"]).target == "a:1")
    }
}
