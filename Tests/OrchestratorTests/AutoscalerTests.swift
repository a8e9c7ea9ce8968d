import ClusterModel
import Messages
import Orchestrator
import Testing

/// A decision and the second it was made at.
struct AutoscaleStep {
    let second: Int
    let decision: AutoscaleDecision
}

/// A service under a recorded load, evaluated once a second as the leader would: tasks a decision adds are
/// ready `startupMs` later, and a scale-down stops the newest tasks first.
struct AutoscaleRun {
    var autoscaler = Autoscaler()
    let spec: Flotilla_V1_AutoscaleSpec
    let startupMs: UInt64
    /// When each task is (or was) ready.
    var readyAt: [UInt64]
    var decisions: [AutoscaleStep] = []
    /// The replicas each evaluation saw, by second.
    var seen: [Int: UInt32] = [:]

    init(_ spec: Flotilla_V1_AutoscaleSpec, replicas: UInt32, startupMs: UInt64 = 0) {
        self.spec = spec
        self.startupMs = startupMs
        readyAt = Array(repeating: 0, count: Int(replicas))
    }

    var replicas: UInt32 { UInt32(readyAt.count) }

    /// Evaluates at every second of `seconds`, with `observe` giving what was measured at that time (ms).
    /// `waking` names the node holding a connection for the service at that time (nil: none).
    mutating func run(_ seconds: Range<Int>, waking: (UInt64) -> String? = { _ in nil }, observe: (UInt64) -> AutoscaleObservation) {
        for second in seconds {
            let now = UInt64(second) * 1_000
            let ready = UInt32(readyAt.filter { $0 <= now }.count)
            seen[second] = replicas
            guard let decision = autoscaler.evaluate(spec, replicas: replicas, ready: ready, observation: observe(now),
                                                     wakingAt: waking(now), nowMs: now) else { continue }
            decisions.append(AutoscaleStep(second: second, decision: decision))
            if decision.to > replicas {
                readyAt += Array(repeating: now + startupMs, count: Int(decision.to - replicas))
            } else {
                readyAt = Array(readyAt.sorted().prefix(Int(decision.to)))
            }
        }
    }
}

@Suite("Autoscaler: replicas follow the load, steadily and within limits")
struct AutoscalerTests {
    static func spec(
        min: UInt32 = 1, max: UInt32 = 20, rps: UInt32 = 0, conns: UInt32 = 0, cpu: UInt32 = 0, upMs: UInt32? = nil, downMs: UInt32? = nil
    ) -> Flotilla_V1_AutoscaleSpec {
        var spec = Flotilla_V1_AutoscaleSpec()
        spec.min = min
        spec.max = max
        spec.targetRps = rps
        spec.targetConnections = conns
        spec.targetCpuPercent = cpu
        if let upMs { spec.scaleUpWindowMs = upMs }
        if let downMs { spec.scaleDownWindowMs = downMs }
        return spec
    }

    static func rps(_ total: Double) -> AutoscaleObservation { AutoscaleObservation(requestsPerSecond: total) }

    // MARK: - Convergence

    @Test("a step up converges to ceil(load / target) in steps of at most +4 or double per 15 s, after the 10 s window")
    func stepUp() {
        var run = AutoscaleRun(Self.spec(rps: 100), replicas: 3, startupMs: 3_000)
        run.run(0..<300) { Self.rps($0 < 60_000 ? 250 : 1_200) }
        // The count of 15 s before is the one the evaluation at that second saw, before its own decision.
        #expect(run.decisions.map(\.second) == [70, 86])
        #expect(run.decisions.map(\.decision.to) == [7, 12])
        #expect(run.decisions.first?.decision.reason == "rps 400/replica > target 100 → 3 → 7 replicas (12 wanted; at most +4 per 15 s)")
        #expect(run.decisions.last?.decision.reason == "rps 171/replica > target 100 → 7 → 12 replicas")
        #expect(run.replicas == 12)
    }

    @Test("a step down waits out the 60 s window, then goes to what the load needs in one decision")
    func stepDown() {
        var run = AutoscaleRun(Self.spec(min: 2, rps: 100), replicas: 15)
        run.run(0..<400) { Self.rps($0 < 120_000 ? 1_500 : 300) }
        #expect(run.decisions.map(\.second) == [180])
        #expect(run.decisions.map(\.decision.reason) == ["rps 20/replica < target 100 → 15 → 3 replicas"])
    }

    @Test("the largest count over the targets wins, and a target with nothing measured is skipped")
    func largestTarget() {
        let spec = Self.spec(rps: 100, conns: 10, cpu: 50, upMs: 0)
        var autoscaler = Autoscaler()
        let all = AutoscaleObservation(requestsPerSecond: 600, activeConnections: 80, cpuPercent: 60)
        #expect(autoscaler.evaluate(spec, replicas: 4, ready: 4, observation: all, nowMs: 0)?.reason == "conns 20/replica > target 10 → 4 → 8 replicas")
        var other = Autoscaler()
        let noConnections = AutoscaleObservation(requestsPerSecond: 600, cpuPercent: 60)
        #expect(other.evaluate(spec, replicas: 4, ready: 4, observation: noConnections, nowMs: 0)?.reason == "rps 150/replica > target 100 → 4 → 6 replicas")
        var idle = Autoscaler()
        #expect(idle.evaluate(spec, replicas: 4, ready: 4, observation: AutoscaleObservation(), nowMs: 0) == nil, "nothing measured: nothing decided")
    }

    @Test("within 10 % of the target nothing changes")
    func tolerance() {
        let spec = Self.spec(rps: 100, upMs: 0, downMs: 0)
        var autoscaler = Autoscaler()
        #expect(autoscaler.evaluate(spec, replicas: 10, ready: 10, observation: Self.rps(1_095), nowMs: 0) == nil)
        #expect(autoscaler.evaluate(spec, replicas: 10, ready: 10, observation: Self.rps(905), nowMs: 1_000) == nil)
        #expect(autoscaler.evaluate(spec, replicas: 10, ready: 10, observation: Self.rps(1_110), nowMs: 2_000)?.to == 12)
    }

    // MARK: - Windows

    @Test("no scale-down before 60 s of low load: a 50 s lull changes nothing, a longer one scales down at 60 s")
    func downWindow() {
        var run = AutoscaleRun(Self.spec(rps: 100), replicas: 10)
        run.run(0..<400) { now in Self.rps((100_000..<150_000).contains(now) || now >= 200_000 ? 200 : 1_000) }
        #expect(run.decisions.map(\.second) == [260])
        #expect(run.decisions.map(\.decision.to) == [2])
    }

    @Test("a configured down-window of 30 s scales down after 30 s of low load")
    func configuredDownWindow() {
        var run = AutoscaleRun(Self.spec(rps: 100, downMs: 30_000), replicas: 10)
        run.run(0..<150) { now in Self.rps((100_000..<150_000).contains(now) ? 200 : 1_000) }
        #expect(run.decisions.map(\.second) == [130])
        #expect(run.decisions.map(\.decision.to) == [2])
    }

    @Test("a spike shorter than the up-window adds no replica; a longer one scales up when the window has passed")
    func upWindow() {
        var run = AutoscaleRun(Self.spec(max: 40, rps: 100), replicas: 4)
        run.run(0..<200) { now in Self.rps((50_000..<59_000).contains(now) || (100_000..<130_000).contains(now) ? 1_200 : 400) }
        #expect(run.decisions.first?.second == 110)
        #expect(run.decisions.first?.decision.to == 8)

        var immediate = AutoscaleRun(Self.spec(rps: 100, upMs: 0), replicas: 4)
        immediate.run(0..<60) { now in Self.rps(now >= 50_000 ? 1_200 : 400) }
        #expect(immediate.decisions.map(\.second) == [50], "an up-window of 0 scales up at once")
    }

    @Test("a scale-up inside the window goes to the lowest count wanted throughout it, and says so")
    func lowestInWindow() {
        var run = AutoscaleRun(Self.spec(max: 40, rps: 100), replicas: 4)
        run.run(0..<30) { now in Self.rps(now < 10_000 ? 400 : now < 15_000 ? 600 : 1_000) }
        #expect(run.decisions.first?.second == 20)
        #expect(run.decisions.first?.decision.to == 6)
        #expect(run.decisions.first?.decision.reason == "rps 250/replica > target 100 → 4 → 6 replicas (10 wanted; the lowest wanted in the last 10 s)")
    }

    @Test("a new leader's autoscaler waits a whole down-window before scaling down")
    func newLeader() {
        var run = AutoscaleRun(Self.spec(rps: 100), replicas: 10)
        run.run(5_000..<5_100) { _ in Self.rps(200) }
        #expect(run.decisions.map(\.second) == [5_060])
    }

    // MARK: - Noise

    @Test("a noisy load near the target makes few decisions in 30 minutes; without windows it would flap", arguments: [1, 2, 3] as [UInt64])
    func noisyLoad(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        // 1,000 rps ± 15 %, a fresh draw every second: a tenth of a target's width outside the tolerance band.
        let series = (0..<1_800).map { _ in 1_000 * (0.85 + 0.3 * Double(random.next() % 1_000_001) / 1_000_000) }
        let observe: (UInt64) -> AutoscaleObservation = { Self.rps(series[Int($0 / 1_000)]) }
        var steady = AutoscaleRun(Self.spec(rps: 100), replicas: 10, startupMs: 2_000)
        steady.run(0..<1_800, observe: observe)
        var jumpy = AutoscaleRun(Self.spec(rps: 100, upMs: 0, downMs: 0), replicas: 10, startupMs: 2_000)
        jumpy.run(0..<1_800, observe: observe)
        print("seed \(seed): \(steady.decisions.count) decisions in 30 min with the default windows, \(jumpy.decisions.count) with none")
        #expect(steady.decisions.count <= 2)
        #expect((9...12).contains(steady.replicas))
        #expect(jumpy.decisions.count >= 100, "the series is noisy enough to flap without windows")
    }

    // MARK: - Limits

    @Test("whatever the load, replicas stay within min and max and grow at most double or +4 per 15 s", arguments: 0..<25 as Range<UInt64>)
    func limits(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        func draw(_ range: ClosedRange<UInt64>) -> UInt64 { range.lowerBound + random.next() % (range.upperBound - range.lowerBound + 1) }
        let low = UInt32(draw(0...3))
        let high = low + UInt32(draw(1...30))
        let spec = Self.spec(min: low, max: high, rps: 100, upMs: UInt32(draw(0...20)) * 1_000, downMs: UInt32(draw(0...90)) * 1_000)
        // A level that jumps every 20 s, with noise.
        let levels = (0..<31).map { _ in Double(draw(0...5_000)) }
        let noise = (0..<600).map { _ in 0.8 + 0.4 * Double(random.next() % 1_001) / 1_000 }
        var run = AutoscaleRun(spec, replicas: UInt32(draw(0...40)), startupMs: draw(0...10) * 1_000)
        run.run(0..<600) { now in Self.rps(levels[Int(now / 20_000)] * noise[Int(now / 1_000)]) }

        var decisions = run.decisions[...]
        let initial = run.seen[0] ?? 0
        if !(low...high).contains(initial) {
            let clamp = decisions.first
            #expect(clamp?.second == 0 && clamp.map { (low...high).contains($0.decision.to) } == true, "a count outside the bounds is moved in at once")
            decisions = decisions.dropFirst()
        }
        for step in decisions {
            #expect((low...high).contains(step.decision.to), "seed \(seed) at \(step.second) s: \(step.decision.reason)")
            guard step.decision.to > step.decision.from else { continue }
            let before = run.seen[max(step.second - 15, 0)] ?? 0
            #expect(step.decision.to <= max(before * 2, before + 4), "seed \(seed) at \(step.second) s: \(step.decision.reason), \(before) 15 s before")
        }
        print("seed \(seed): min \(low) max \(high), \(run.decisions.count) decisions, ending at \(run.replicas)")
    }

    @Test("a count outside [min, max] is moved in at once, with the bound as the reason")
    func outsideBounds() {
        var autoscaler = Autoscaler()
        let spec = Self.spec(min: 2, max: 10, rps: 100)
        #expect(autoscaler.evaluate(spec, replicas: 1, ready: 1, observation: Self.rps(100), nowMs: 0)?.reason == "below min 2 → 1 → 2 replicas")
        #expect(autoscaler.evaluate(spec, replicas: 12, ready: 12, observation: Self.rps(1_200), nowMs: 1_000)?.reason == "above max 10 → 12 → 10 replicas")
        var capped = Autoscaler()
        let max5 = Self.spec(max: 5, rps: 200, upMs: 0)
        #expect(capped.evaluate(max5, replicas: 3, ready: 3, observation: Self.rps(2_460), nowMs: 0)?.reason == "rps 820/replica > target 200 → 3 → 5 replicas (13 wanted; max 5)")
        #expect(capped.evaluate(max5, replicas: 5, ready: 5, observation: Self.rps(4_100), nowMs: 1_000) == nil, "at max: nothing more")
    }

    static func traffic(rps: Double, conns: Double = 0) -> AutoscaleObservation {
        AutoscaleObservation(requestsPerSecond: rps, activeConnections: conns)
    }

    @Test("with min 0 load alone goes down to 1 replica; 0 only after a whole down-window without any traffic")
    func minZero() {
        var autoscaler = Autoscaler()
        let spec = Self.spec(min: 0, rps: 100, downMs: 0)
        #expect(autoscaler.evaluate(spec, replicas: 5, ready: 5, observation: Self.traffic(rps: 0, conns: 2), nowMs: 0)?.reason
            == "rps 0/replica < target 100 → 5 → 1 replica (0 wanted; at least 1 until no traffic for 0 s)")
        #expect(autoscaler.evaluate(spec, replicas: 1, ready: 1, observation: Self.traffic(rps: 0, conns: 1), nowMs: 1_000) == nil,
                "an open connection is traffic")
        #expect(autoscaler.evaluate(spec, replicas: 1, ready: 1, observation: Self.rps(0), nowMs: 2_000) == nil,
                "connections not measured: not known to be idle")
        #expect(autoscaler.evaluate(spec, replicas: 1, ready: 1, observation: Self.traffic(rps: 0), nowMs: 3_000)?.reason
            == "no traffic for 0 s → 1 → 0 replicas")
        #expect(autoscaler.evaluate(spec, replicas: 0, ready: 0, observation: AutoscaleObservation(), nowMs: 4_000) == nil,
                "at 0 with min 0 nothing is below min, and nothing measured moves it")
    }

    @Test("no traffic for the 60 s down-window takes 1 replica to 0, the reason says so; a held connection keeps it")
    func scaleToZero() {
        var run = AutoscaleRun(Self.spec(min: 0, rps: 100), replicas: 1)
        run.run(0..<60) { _ in Self.traffic(rps: 0) }
        #expect(run.decisions.isEmpty)
        run.run(60..<62) { _ in Self.traffic(rps: 0) }
        #expect(run.decisions.map(\.second) == [60])
        #expect(run.decisions.map(\.decision.reason) == ["no traffic for 60 s → 1 → 0 replicas"])

        var held = AutoscaleRun(Self.spec(min: 0, rps: 100), replicas: 1)
        held.run(0..<120, waking: { $0 == 50_000 ? "node-2" : nil }) { _ in Self.traffic(rps: 0) }
        #expect(held.decisions.map(\.second) == [111], "the held connection at 50 s starts the window again")
        #expect(held.replicas == 0)
    }

    @Test("load, idle, 0 after the window, a wake brings 1 at once, then traffic scales up as usual")
    func zeroAndBack() {
        // 5 replicas under 500 rps until 100 s; silence until 300 s; a connection held at 300 s; then 800 rps.
        var run = AutoscaleRun(Self.spec(min: 0, max: 10, rps: 100), replicas: 5, startupMs: 2_000)
        run.run(0..<400, waking: { $0 == 300_000 ? "node-2" : nil }) { now in
            if now < 100_000 { return Self.traffic(rps: 500, conns: 5) }
            if now < 300_000 { return Self.traffic(rps: 0) }
            return Self.traffic(rps: 800, conns: 8)
        }
        let reasons = run.decisions.map { "\($0.second): \($0.decision.reason)" }
        // The replica is ready at 302; 800 rps must last the 10 s up-window, then +4 (or double) per 15 s.
        #expect(run.decisions.map(\.second) == [160, 300, 312, 316, 328], "\(reasons)")
        #expect(run.decisions.map(\.decision.to) == [0, 1, 4, 5, 8], "\(reasons)")
        #expect(run.decisions.first?.decision.reason == "no traffic for 60 s → 5 → 0 replicas")
        #expect(run.decisions.dropFirst().first?.decision.reason == "a connection is waiting at node-2 → 0 → 1 replica")
        #expect(run.seen[299] == 0 && run.seen[301] == 1)
    }

    @Test("at 0 replicas nothing but a wake starts one; a wake at 1 or more, or with max 0, asks for nothing")
    func wake() {
        var autoscaler = Autoscaler()
        let spec = Self.spec(min: 0, rps: 100)
        for second in 0..<100 {
            #expect(autoscaler.evaluate(spec, replicas: 0, ready: 0, observation: AutoscaleObservation(), nowMs: UInt64(second) * 1_000) == nil)
        }
        #expect(autoscaler.evaluate(spec, replicas: 0, ready: 0, observation: AutoscaleObservation(), wakingAt: "n1", nowMs: 100_000)
            == AutoscaleDecision(from: 0, to: 1, reason: "a connection is waiting at n1 → 0 → 1 replica"))
        #expect(autoscaler.evaluate(spec, replicas: 1, ready: 0, observation: AutoscaleObservation(), wakingAt: "n1", nowMs: 101_000) == nil,
                "the replica is starting: nothing more")
        #expect(Autoscaler.wake(replicas: 0, autoscale: spec, at: "n1")?.to == 1)
        #expect(Autoscaler.wake(replicas: 2, autoscale: spec, at: "n1") == nil)
        #expect(Autoscaler.wake(replicas: 0, autoscale: Self.spec(min: 0, max: 0, rps: 100), at: "n1") == nil)
    }

    // MARK: - Readiness

    @Test("tasks that are not ready are not measured, and count as idle in a scale-up")
    func notReady() {
        let spec = Self.spec(rps: 100, cpu: 70, upMs: 0, downMs: 0)
        // 2 of 4 ready at 200 rps each: the 2 starting ones will carry their share, so no second scale-up.
        var starting = Autoscaler()
        #expect(starting.evaluate(spec, replicas: 4, ready: 2, observation: Self.rps(400), nowMs: 0) == nil)
        // The same load per task with every task ready doubles the count.
        var allReady = Autoscaler()
        #expect(allReady.evaluate(spec, replicas: 2, ready: 2, observation: Self.rps(400), nowMs: 0)?.to == 4)
        // More than the starting tasks can carry still scales up: 600 rps wants 6.
        var more = Autoscaler()
        #expect(more.evaluate(spec, replicas: 4, ready: 2, observation: Self.rps(600), nowMs: 0)?.to == 6)
        // CPU is averaged over the ready tasks only: 140 % on 2 ready of 4 is 70 % over all four.
        var cpu = Autoscaler()
        #expect(cpu.evaluate(spec, replicas: 4, ready: 2, observation: AutoscaleObservation(cpuPercent: 140), nowMs: 0) == nil)
        #expect(cpu.evaluate(spec, replicas: 2, ready: 2, observation: AutoscaleObservation(cpuPercent: 140), nowMs: 1_000)?.reason
            == "cpu 140%/replica > target 70% → 2 → 4 replicas")
        // No task ready: nothing is measured and nothing decided.
        var none = Autoscaler()
        #expect(none.evaluate(spec, replicas: 3, ready: 0, observation: Self.rps(900), nowMs: 0) == nil)
    }

    // MARK: - Reasons

    @Test("reasons say the metric per ready task, the target, and the counts: \"rps 330/replica > target 200 → 3 → 5 replicas\"")
    func reasons() {
        var up = Autoscaler()
        #expect(up.evaluate(Self.spec(rps: 200, upMs: 0), replicas: 3, ready: 3, observation: Self.rps(990), nowMs: 0)?.reason
            == "rps 330/replica > target 200 → 3 → 5 replicas")
        var limited = Autoscaler()
        #expect(limited.evaluate(Self.spec(rps: 200, upMs: 0), replicas: 3, ready: 3, observation: Self.rps(2_460), nowMs: 0)?.reason
            == "rps 820/replica > target 200 → 3 → 7 replicas (13 wanted; at most +4 per 15 s)")
        var doubled = Autoscaler()
        #expect(doubled.evaluate(Self.spec(max: 40, rps: 100, upMs: 0), replicas: 6, ready: 6, observation: Self.rps(3_000), nowMs: 0)?.reason
            == "rps 500/replica > target 100 → 6 → 12 replicas (30 wanted; at most double per 15 s)")
        var down = Autoscaler()
        #expect(down.evaluate(Self.spec(conns: 10, downMs: 0), replicas: 8, ready: 8, observation: AutoscaleObservation(activeConnections: 20), nowMs: 0)?.reason
            == "conns 2.5/replica < target 10 → 8 → 2 replicas")
        var floor = Autoscaler()
        #expect(floor.evaluate(Self.spec(min: 3, conns: 10, downMs: 0), replicas: 8, ready: 8, observation: AutoscaleObservation(activeConnections: 4), nowMs: 0)?.reason
            == "conns 0.5/replica < target 10 → 8 → 3 replicas (1 wanted; min 3)")
    }
}
