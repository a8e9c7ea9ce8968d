import ClusterModel
@testable import Raft

/// A hand-driven cluster for scenario tests (after etcd's `network` in raft_test.go): messages go out only
/// when delivered, links can be cut, and every Ready is persisted and applied in full unless a test says not.
struct ScriptedCluster {
    var nodes: [NodeID: RaftNode] = [:]
    var outbox: [RaftMessage] = []
    var cut: Set<[NodeID]> = []
    var applied: [NodeID: [LogEntry]] = [:]
    var readStates: [NodeID: [ReadState]] = [:]
    var readies: [NodeID: [Ready]] = [:]

    static func id(_ n: Int) -> NodeID { NodeID("n\(n)") }

    /// `count` voters n1…nN, all starting from the same bootstrap log.
    init(voters count: Int, options: RaftOptions = RaftOptions(), seed: UInt64 = 1) {
        let ids = (1...count).map(Self.id)
        let entries = ids.enumerated().map { LogEntry(term: 1, index: LogIndex(UInt64($0.offset + 1)), payload: .configuration(.promote($0.element))) }
        for id in ids {
            let state = PersistentState(hardState: HardState(term: 1, votedFor: nil, commit: LogIndex(UInt64(count))), entries: entries)
            nodes[id] = RaftNode(id: id, restoring: state, options: options, seed: seed)
        }
    }

    subscript(_ n: Int) -> RaftNode {
        get { nodes[Self.id(n)]! }
        set { nodes[Self.id(n)] = newValue }
    }

    /// Persists, collects messages and applies committed entries for every node, until quiet.
    mutating func process() {
        var progressed = true
        while progressed {
            progressed = false
            for id in nodes.keys.sorted() where nodes[id]!.hasReady {
                progressed = true
                let ready = nodes[id]!.ready()
                readies[id, default: []].append(ready)
                outbox.append(contentsOf: ready.allMessages)
                applied[id, default: []].append(contentsOf: ready.committedEntries)
                readStates[id, default: []].append(contentsOf: ready.readStates)
                nodes[id]!.advance(ready)
            }
        }
    }

    /// Delivers messages (and whatever they cause) until none are left; cut links drop them.
    mutating func deliverAll(maxRounds: Int = 1_000) {
        process()
        var rounds = 0
        while !outbox.isEmpty, rounds < maxRounds {
            rounds += 1
            let batch = outbox
            outbox = []
            for message in batch where !cut.contains([message.from, message.to]) && nodes[message.to] != nil {
                nodes[message.to]!.step(message)
            }
            process()
        }
    }

    /// Ticks `n` until it has campaigned and delivers everything.
    mutating func elect(_ n: Int) {
        nodes[Self.id(n)]!.campaign()
        deliverAll()
    }

    mutating func tickAll(_ times: Int = 1) {
        for _ in 0..<times {
            for id in nodes.keys.sorted() { nodes[id]!.tick() }
            deliverAll()
        }
    }

    mutating func isolate(_ n: Int) {
        for other in nodes.keys where other != Self.id(n) {
            cut.insert([Self.id(n), other])
            cut.insert([other, Self.id(n)])
        }
    }

    mutating func cutLink(_ a: Int, _ b: Int) {
        cut.insert([Self.id(a), Self.id(b)])
        cut.insert([Self.id(b), Self.id(a)])
    }

    mutating func heal() { cut = [] }

    var leaders: [NodeID] { nodes.keys.filter { nodes[$0]!.role == .leader }.sorted() }

    func commands(on n: Int) -> [String] {
        (applied[Self.id(n)] ?? []).compactMap {
            if case .command(let bytes) = $0.payload { String(decoding: bytes, as: UTF8.self) } else { nil }
        }
    }
}
