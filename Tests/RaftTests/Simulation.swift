import ClusterModel
@testable import Raft

/// A deterministic simulation of a Raft cluster: nodes, durable storage, a network that loses, delays,
/// reorders and duplicates messages, partitions, crashes and restarts — all driven by one seed. After every
/// step it checks Raft's safety properties (§5.4 and Figure 3 of the paper); any violation names the seed.
struct Simulation {
    struct Faults {
        var dropRate = 0.05
        var duplicateRate = 0.02
        var crashRate = 0.002
        var partitionRate = 0.003
        var healRate = 0.01
        var proposeRate = 0.08
        var crashBeforePersistRate = 0.01
        /// How often a member's write stays in flight while it keeps stepping messages (a runtime that
        /// persists off its event loop), and how often a step completes one such write.
        var asyncWriteRate = 0.4
        var completeWriteRate = 0.15
        /// How often members are told a peer's connection broke: after it crashed or a link was cut (most
        /// of the time, as a transport would notice), and spuriously (a flapping link, a live leader).
        var noticeLossRate = 0.8
        var spuriousLossRate = 0.002

        /// The faults before in-flight writes and loss notices were modelled: recorded seeds replay with it.
        static var classic: Faults {
            Faults(asyncWriteRate: 0, completeWriteRate: 0, noticeLossRate: 0, spuriousLossRate: 0)
        }
    }

    /// What a member has durably written: the simulated disk, which survives crashes.
    struct Disk {
        var hardState = HardState()
        var snapshot: Snapshot?
        var entries: [LogEntry] = []

        mutating func persist(_ ready: Ready) {
            if let state = ready.hardState { hardState = state }
            if let snapshot = ready.snapshot {
                self.snapshot = snapshot
                entries.removeAll()
            }
            if let first = ready.entries.first {
                entries.removeAll { $0.index >= first.index }
                entries.append(contentsOf: ready.entries)
            }
        }

        mutating func compact(through index: LogIndex, snapshot: Snapshot) {
            self.snapshot = snapshot
            entries.removeAll { $0.index <= index }
        }
    }

    /// The replicated state machine: the ordered list of applied entries.
    struct StateMachine {
        var applied: [LogEntry] = []
        var lastIndex: LogIndex = 0
        var lastTerm: Term = 0
    }

    var seed: UInt64
    var rng: SimRandom
    var faults: Faults
    let ids: [NodeID]
    var options: RaftOptions
    var nodes: [NodeID: RaftNode] = [:]
    /// A member's write handed to its disk and not yet done: its early messages are already out.
    var inflight: [NodeID: Ready] = [:]
    var disks: [NodeID: Disk] = [:]
    var machines: [NodeID: StateMachine] = [:]
    var network: [RaftMessage] = []
    var cut: Set<[NodeID]> = []
    var step = 0
    /// Every index ever applied anywhere, with the entry applied there (state machine safety).
    var appliedAnywhere: [LogIndex: LogEntry] = [:]
    var leadersByTerm: [Term: NodeID] = [:]
    /// Proposals a leader saw committed and applied: they must never be lost.
    var acknowledged: [LogIndex: LogEntry] = [:]
    var outstanding: [NodeID: [(index: LogIndex, term: Term)]] = [:]
    var proposals = 0
    var snapshotEvery: UInt64 = 0
    var failures: [String] = []

    init(seed: UInt64, members: Int, faults: Faults = Faults(), options: RaftOptions = RaftOptions(), snapshotEvery: UInt64 = 0) {
        self.seed = seed
        self.rng = SimRandom(seed: seed)
        self.faults = faults
        self.options = options
        self.snapshotEvery = snapshotEvery
        ids = (1...members).map { NodeID("n\($0)") }
        // Every member starts from the same bootstrap log naming all voters.
        var entries: [LogEntry] = []
        for (offset, id) in ids.enumerated() {
            entries.append(LogEntry(term: 1, index: LogIndex(UInt64(offset + 1)), payload: .configuration(.promote(id))))
        }
        for id in ids {
            let disk = Disk(hardState: HardState(term: 1, votedFor: nil, commit: LogIndex(UInt64(members))), entries: entries)
            disks[id] = disk
            machines[id] = StateMachine()
            start(id)
        }
    }

    mutating func start(_ id: NodeID) {
        let disk = disks[id]!
        nodes[id] = RaftNode(
            id: id, restoring: PersistentState(hardState: disk.hardState, snapshot: disk.snapshot, entries: disk.entries),
            options: options, seed: seed &+ UInt64(step))
        // The state machine restarts from the snapshot; committed entries after it are re-applied.
        var machine = StateMachine()
        if let snapshot = disk.snapshot {
            machine.applied = appliedPrefix(through: snapshot.metadata.index)
            machine.lastIndex = snapshot.metadata.index
            machine.lastTerm = snapshot.metadata.term
        }
        machines[id] = machine
        outstanding[id] = []
        inflight[id] = nil
    }

    func appliedPrefix(through index: LogIndex) -> [LogEntry] {
        guard index > 0 else { return [] }
        return (1...index.rawValue).compactMap { appliedAnywhere[LogIndex($0)] }
    }

    mutating func fail(_ message: String) {
        failures.append("seed \(seed) step \(step): \(message)")
    }

    // MARK: - Driving

    mutating func run(steps: Int) {
        for _ in 0..<steps {
            guard failures.isEmpty else { return }
            randomStep()
        }
    }

    mutating func randomStep() {
        step += 1
        let roll = rng.unit()
        var threshold = faults.crashRate
        if roll < threshold { crashRandom(); return }
        threshold += faults.crashRate * 3
        if roll < threshold { restartRandom(); return }
        threshold += faults.partitionRate
        if roll < threshold { partitionRandom(); return }
        threshold += faults.healRate
        if roll < threshold { cut = []; return }
        threshold += faults.proposeRate
        if roll < threshold { proposeOnLeader(); return }
        threshold += faults.spuriousLossRate
        if roll < threshold {
            if let id = ids.randomElement(using: &rng), let peer = ids.randomElement(using: &rng), peer != id {
                noticeLoss(of: peer, by: id)
            }
            return
        }
        threshold += faults.completeWriteRate
        if roll < threshold {
            if let id = inflight.keys.sorted().randomElement(using: &rng) { completeWrite(id) }
            return
        }
        if roll < threshold + 0.25 {
            if let id = ids.randomElement(using: &rng), nodes[id] != nil { nodes[id]!.tick(); process(id) }
            return
        }
        deliverRandom()
    }

    /// Heals everything, restarts everyone, and runs until the cluster has a leader and every member has
    /// applied every acknowledged entry (or the budget runs out).
    mutating func stabilize(maxSteps: Int = 20_000) {
        cut = []
        faults = Faults(
            dropRate: 0, duplicateRate: 0, crashRate: 0, partitionRate: 0, healRate: 0, proposeRate: 0,
            crashBeforePersistRate: 0, asyncWriteRate: 0, completeWriteRate: 0, noticeLossRate: 0, spuriousLossRate: 0)
        for id in ids where nodes[id] == nil { start(id) }
        // A healed network delivers in order with bounded delay: drain what is in flight (oldest first),
        // then let time pass. (Arbitrary delays can stall any consensus protocol; safety never depends on it.)
        var remaining = maxSteps
        while remaining > 0, failures.isEmpty {
            remaining -= 1
            step += 1
            completeAllWrites()
            if network.isEmpty {
                for id in ids { nodes[id]!.tick(); process(id) }
            } else {
                deliverOldest()
            }
            if remaining % 50 == 0, converged() { break }
        }
        // One more proposal through the final leader makes every earlier entry commit (§5.4.2).
        if failures.isEmpty, let leader = ids.first(where: { nodes[$0]?.role == .leader }) {
            _ = try? nodes[leader]!.propose(Array("final".utf8))
            process(leader)
            for _ in 0..<5_000 where failures.isEmpty {
                step += 1
                completeAllWrites()
                if network.isEmpty { for id in ids { nodes[id]!.tick(); process(id) } } else { deliverOldest() }
                if converged() && network.isEmpty { break }
            }
        }
    }

    func converged() -> Bool {
        guard let maxAcked = acknowledged.keys.max() else { return ids.contains { nodes[$0]?.role == .leader } }
        return ids.allSatisfy { machines[$0]!.lastIndex >= maxAcked }
    }

    mutating func crashRandom() {
        let alive = ids.filter { nodes[$0] != nil }
        guard alive.count > 1, let id = alive.randomElement(using: &rng) else { return }
        nodes[id] = nil
        inflight[id] = nil
        network.removeAll { $0.to == id }
        for other in ids where other != id && chance(faults.noticeLossRate) { noticeLoss(of: id, by: other) }
    }

    /// A draw that consumes no randomness when the rate is zero, so seeds recorded before a fault existed
    /// replay exactly with `Faults.classic`.
    mutating func chance(_ rate: Double) -> Bool {
        rate > 0 && rng.unit() < rate
    }

    /// `observer`'s transport reports that its connection from `peer` broke.
    mutating func noticeLoss(of peer: NodeID, by observer: NodeID) {
        guard nodes[observer] != nil else { return }
        nodes[observer]!.peerUnreachable(peer)
        process(observer)
    }

    mutating func restartRandom() {
        guard let id = ids.filter({ nodes[$0] == nil }).randomElement(using: &rng) else { return }
        start(id)
    }

    mutating func partitionRandom() {
        guard ids.count >= 2 else { return }
        let a = ids.randomElement(using: &rng)!
        let b = ids.randomElement(using: &rng)!
        guard a != b else {
            // Isolate one node from everyone.
            for other in ids where other != a {
                cut.insert([a, other])
                cut.insert([other, a])
                if chance(faults.noticeLossRate) { noticeLoss(of: a, by: other) }
            }
            return
        }
        cut.insert([a, b])
        if chance(faults.noticeLossRate) { noticeLoss(of: a, by: b) }
        if rng.unit() < 0.7 {  // sometimes one-way
            cut.insert([b, a])
            if chance(faults.noticeLossRate) { noticeLoss(of: b, by: a) }
        }
    }

    mutating func proposeOnLeader() {
        guard let leader = ids.filter({ nodes[$0]?.role == .leader }).randomElement(using: &rng) else { return }
        proposals += 1
        let command = Array("cmd-\(seed)-\(proposals)".utf8)
        if let (index, term) = try? nodes[leader]!.propose(command) {
            outstanding[leader, default: []].append((index, term))
        }
        process(leader)
    }

    mutating func deliverOldest() {
        let message = network.removeFirst()
        guard !cut.contains([message.from, message.to]), nodes[message.to] != nil else { return }
        nodes[message.to]!.step(message)
        process(message.to)
    }

    mutating func deliverRandom() {
        guard !network.isEmpty else { return }
        let position = Int(rng.next() % UInt64(network.count))
        let message = network.remove(at: position)
        if rng.unit() < faults.dropRate { return }
        if rng.unit() < faults.duplicateRate { network.append(message) }
        guard !cut.contains([message.from, message.to]), nodes[message.to] != nil else { return }
        nodes[message.to]!.step(message)
        process(message.to)
    }

    /// Runs the node's Ready cycle: send the early messages, then persist, send, apply, advance — or crash
    /// before persisting. Sometimes the write stays in flight and the member keeps stepping messages until
    /// `completeWrite` (as the runtime does with its storage thread); no new Ready is taken meanwhile.
    mutating func process(_ id: NodeID) {
        guard var node = nodes[id] else { return }
        while inflight[id] == nil, node.hasReady {
            let ready = node.ready()
            network.append(contentsOf: ready.earlyMessages)
            if chance(faults.asyncWriteRate) {
                inflight[id] = ready
                break
            }
            guard finishWrite(ready, on: id, node: &node) else { return }
        }
        nodes[id] = node
        checkInvariants(after: id)
    }

    mutating func completeWrite(_ id: NodeID) {
        guard var node = nodes[id], let ready = inflight.removeValue(forKey: id) else { return }
        guard finishWrite(ready, on: id, node: &node) else { return }
        nodes[id] = node
        process(id)
    }

    mutating func completeAllWrites() {
        for id in inflight.keys.sorted() { completeWrite(id) }
    }

    /// Persists a Ready and does what follows; false when the member crashed before the write was durable.
    private mutating func finishWrite(_ ready: Ready, on id: NodeID, node: inout RaftNode) -> Bool {
        if rng.unit() < faults.crashBeforePersistRate {
            // Crash before the write was durable: only the early messages got out.
            nodes[id] = nil
            inflight[id] = nil
            network.removeAll { $0.to == id }
            return false
        }
        disks[id]!.persist(ready)
        network.append(contentsOf: ready.messages)
        if let snapshot = ready.snapshot { installSnapshot(snapshot, on: id) }
        for entry in ready.committedEntries { apply(entry, on: id, node: node) }
        node.advance(ready)
        if snapshotEvery > 0, node.appliedIndex.rawValue % snapshotEvery == 0, node.appliedIndex > node.firstIndex {
            let index = node.appliedIndex
            let snapshot = Snapshot(
                metadata: SnapshotMetadata(index: index, term: node.entry(at: index)?.term ?? 0, configuration: node.configuration),
                data: Array("snapshot-\(index)".utf8))
            node.snapshotTaken(snapshot, compactThrough: index)
            disks[id]!.compact(through: index, snapshot: snapshot)
        }
        return true
    }

    mutating func installSnapshot(_ snapshot: Snapshot, on id: NodeID) {
        var machine = machines[id]!
        guard snapshot.metadata.index > machine.lastIndex else { return }
        // The snapshot must stand for exactly what was applied anywhere up to its index.
        machine.applied = appliedPrefix(through: snapshot.metadata.index)
        if machine.applied.count != Int(snapshot.metadata.index.rawValue) {
            fail("\(id) installed a snapshot at \(snapshot.metadata.index) covering entries never applied anywhere")
        }
        machine.lastIndex = snapshot.metadata.index
        machine.lastTerm = snapshot.metadata.term
        machines[id] = machine
    }

    mutating func apply(_ entry: LogEntry, on id: NodeID, node: RaftNode) {
        var machine = machines[id]!
        guard entry.index == machine.lastIndex.next else {
            fail("\(id) applied \(entry.index) after \(machine.lastIndex): out of order")
            return
        }
        if let other = appliedAnywhere[entry.index], other != entry {
            fail("state machine safety: index \(entry.index) applied as \(entry.term)/\(entry.payload) on \(id) but \(other.term)/\(other.payload) elsewhere")
        }
        appliedAnywhere[entry.index] = entry
        machine.applied.append(entry)
        machine.lastIndex = entry.index
        machine.lastTerm = entry.term
        machines[id] = machine
        if let mine = outstanding[id], let position = mine.firstIndex(where: { $0.index == entry.index }) {
            if mine[position].term == entry.term { acknowledged[entry.index] = entry }
            outstanding[id]!.remove(at: position)
        }
    }

    mutating func checkInvariants(after id: NodeID) {
        guard let node = nodes[id] else { return }
        // Election safety: at most one leader per term.
        if node.role == .leader {
            if let other = leadersByTerm[node.term], other != id {
                fail("election safety: \(other) and \(id) both leaders in term \(node.term)")
            }
            if leadersByTerm[node.term] == nil {
                leadersByTerm[node.term] = id
                // Leader completeness: a new leader holds every entry applied anywhere.
                for (index, entry) in appliedAnywhere where index >= node.firstIndex {
                    if node.entry(at: index) != entry {
                        fail("leader completeness: new leader \(id) of term \(node.term) lacks applied entry \(index)")
                        break
                    }
                }
            }
        }
        // Log matching, checked against every other live member over the common prefix.
        for other in ids where other != id {
            guard let peer = nodes[other] else { continue }
            let upper = min(node.lastIndex, peer.lastIndex)
            let lower = max(node.firstIndex, peer.firstIndex)
            guard lower <= upper else { continue }
            var index = upper
            // Find the highest index where both have the same term; everything before must be identical.
            while index >= lower, node.entry(at: index)?.term != peer.entry(at: index)?.term { index = index.previous }
            var check = index
            while check >= lower, check > 0 {
                if node.entry(at: check) != peer.entry(at: check) {
                    fail("log matching: \(id) and \(other) agree at \(index) but differ at \(check)")
                    return
                }
                check = check.previous
            }
        }
        // The membership never changes in these runs: every member must always know every voter (a
        // configuration lost at a compaction point once left members unable to campaign).
        if node.configuration.voters != Set(ids) {
            fail("\(id) lost the configuration: \(node.configuration)")
        }
        // Committed never beyond the log.
        if node.commitIndex > node.lastIndex {
            fail("\(id) commit \(node.commitIndex) beyond last index \(node.lastIndex)")
        }
    }

    /// After stabilizing: every acknowledged entry is applied, at its index, on every member.
    mutating func checkNoAcknowledgedLoss() {
        for (index, entry) in acknowledged {
            for id in ids {
                let machine = machines[id]!
                guard machine.lastIndex >= index else {
                    fail("acknowledged entry \(index) not applied on \(id) (applied through \(machine.lastIndex))")
                    return
                }
                if let applied = machine.applied.first(where: { $0.index == index }), applied != entry {
                    fail("acknowledged entry \(index) replaced on \(id)")
                    return
                }
            }
        }
    }
}

/// The simulation's randomness: SplitMix64 (seeded) with a few conveniences.
struct SimRandom: RandomNumberGenerator {
    var base: SplitMix64
    init(seed: UInt64) { base = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D) }
    mutating func next() -> UInt64 { base.next() }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
