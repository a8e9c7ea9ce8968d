import ClusterModel
import Testing
@testable import Raft

/// One test per classic Raft bug, each named for it, plus the behaviours the paper spells out.
@Suite("Raft: named regressions and paper behaviours")
struct RaftRegressionTests {
    static func n(_ i: Int) -> NodeID { ScriptedCluster.id(i) }

    @Test("a leader is elected, and a proposal commits and applies on every member")
    func electAndReplicate() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        #expect(cluster.leaders == [Self.n(1)])
        _ = try cluster[1].propose(Array("x=1".utf8))
        cluster.deliverAll()
        for i in 1...3 { #expect(cluster.commands(on: i) == ["x=1"]) }
    }

    @Test("Figure 8: a leader never commits an entry of an older term by counting replicas")
    func figureEight() throws {
        // n1 holds index 6 from term 2 that never committed; it becomes leader of a later term.
        var log = (1...5).map { LogEntry(term: 1, index: LogIndex(UInt64($0)), payload: .configuration(.promote(Self.n($0)))) }
        log.append(LogEntry(term: 2, index: 6, payload: .command(Array("old".utf8))))
        var leader = RaftNode(
            id: Self.n(1), restoring: PersistentState(hardState: HardState(term: 3, votedFor: nil, commit: 5), entries: log),
            options: RaftOptions(), seed: 7)
        leader.campaign()
        for voter in 2...3 {
            leader.step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: 4, kind: .voteResponse(granted: true, preVote: true)))
        }
        for voter in 2...3 {
            leader.step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: 4, kind: .voteResponse(granted: true, preVote: false)))
        }
        #expect(leader.role == .leader)
        #expect(leader.term == 4)
        leader.advance(leader.ready())  // persists its no-op at index 7
        // Two followers report holding index 6 (term 2): a majority holds it, but it is of term 2, not 4.
        for follower in 2...3 {
            leader.step(RaftMessage(from: Self.n(follower), to: Self.n(1), term: 4, kind: .appendResponse(accepted: true, index: 6, hint: 0)))
        }
        #expect(leader.commitIndex == 5, "committed an old-term entry by counting replicas")
        // Once a majority holds the leader's own entry (index 7, term 4), 6 and 7 commit together.
        for follower in 2...3 {
            leader.step(RaftMessage(from: Self.n(follower), to: Self.n(1), term: 4, kind: .appendResponse(accepted: true, index: 7, hint: 0)))
        }
        #expect(leader.commitIndex == 7)
    }

    @Test("a vote is granted only in the same Ready that persists it, so a crash before the fsync forgets it unsent")
    func voteNotSentBeforePersisted() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        cluster.tickAll(3)
        for (id, readies) in cluster.readies {
            for ready in readies {
                for message in ready.messages {
                    if case .voteResponse(true, false) = message.kind {
                        #expect(ready.hardState?.votedFor == message.to, "\(id) sent a vote it had not persisted")
                        #expect(ready.hardState?.term == message.term)
                    }
                }
            }
        }
        // A member that crashes between granting and persisting restarts with no vote recorded.
        var voter = RaftNode(id: Self.n(2), restoring: PersistentState(hardState: HardState(term: 5, commit: 0)), options: RaftOptions(), seed: 3)
        voter.step(RaftMessage(from: Self.n(3), to: Self.n(2), term: 6, kind: .requestVote(lastIndex: 0, lastTerm: 0, preVote: false, transfer: false)))
        let unpersisted = voter.ready()
        #expect(unpersisted.hardState?.votedFor == Self.n(3))
        #expect(unpersisted.messages.contains { if case .voteResponse(true, false) = $0.kind { true } else { false } })
        // ...crash: nothing of `unpersisted` reached the disk or the network.
        let restarted = RaftNode(id: Self.n(2), restoring: PersistentState(hardState: HardState(term: 5, commit: 0)), options: RaftOptions(), seed: 3)
        #expect(restarted.votedFor == nil)
    }

    @Test("a leader replicates before its own fsync but counts itself toward a quorum only once durable (§10.2.1)")
    func leaderCountsItselfOnlyWhenDurable() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        let (index, _) = try cluster[1].propose(Array("x=1".utf8))
        let write = cluster[1].ready()
        // The appends may leave at once; the entry is still only in the leader's write in flight.
        #expect(write.entries.map(\.index) == [index])
        let appends = write.earlyMessages.filter { if case .append = $0.kind { true } else { false } }
        #expect(Set(appends.map(\.to)) == [Self.n(2), Self.n(3)])
        #expect(write.messages.isEmpty)

        // One follower's acknowledgement plus a leader whose write is not durable is not a majority.
        var n2 = cluster[2]
        n2.step(try #require(appends.first { $0.to == Self.n(2) }))
        let n2Ready = n2.ready()
        n2.advance(n2Ready)
        let ack = try #require(n2Ready.messages.first { if case .appendResponse(true, _, _) = $0.kind { true } else { false } })
        cluster[1].step(ack)
        #expect(cluster[1].commitIndex < index)

        // The leader's own fsync completes: now it counts, and the entry commits and applies.
        cluster[1].advance(write)
        #expect(cluster[1].commitIndex == index)
        #expect(cluster[1].ready().committedEntries.map(\.index) == [index])
    }

    @Test("proposals made between two Readies travel in one append per follower (batching)")
    func proposalsBetweenReadiesAreBatched() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        for n in 0..<20 { _ = try cluster[1].propose(Array("k\(n)".utf8)) }
        let ready = cluster[1].ready()
        #expect(ready.entries.count == 20)
        let appends = ready.earlyMessages.compactMap { message -> (NodeID, Int)? in
            if case .append(_, _, let entries, _) = message.kind { (message.to, entries.count) } else { nil }
        }
        #expect(appends.map(\.0) == [Self.n(2), Self.n(3)])
        #expect(appends.allSatisfy { $0.1 == 20 })
        cluster[1].advance(ready)
        cluster.outbox += ready.allMessages
        cluster.deliverAll()
        for i in 1...3 { #expect(cluster.commands(on: i).count == 20) }
    }

    @Test("a candidate's vote requests and a follower's acknowledgements wait for the write they depend on")
    func votesAndAcknowledgementsAreNeverEarly() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster[1].campaign()
        let campaign = cluster[1].ready()
        #expect(campaign.earlyMessages.isEmpty)
        #expect(campaign.messages.contains { if case .requestVote = $0.kind { true } else { false } })
        cluster[1].advance(campaign)
        cluster.outbox += campaign.allMessages
        cluster.deliverAll()
        #expect(cluster.leaders == [Self.n(1)])
        _ = try cluster[1].propose(Array("y".utf8))
        let write = cluster[1].ready()
        var n2 = cluster[2]
        for message in write.earlyMessages where message.to == Self.n(2) { n2.step(message) }
        let follower = n2.ready()
        #expect(!follower.entries.isEmpty)
        #expect(follower.earlyMessages.isEmpty)
        #expect(follower.messages.contains { if case .appendResponse(true, _, _) = $0.kind { true } else { false } })
    }

    @Test("followers that lose the leader's connection elect a new leader within a few ticks, without splitting the vote", arguments: [3, 5])
    func fastElectionAfterLeaderLoss(members: Int) throws {
        let options = RaftOptions()
        var cluster = ScriptedCluster(voters: members, options: options)
        cluster.elect(1)
        cluster.isolate(1)  // the leader's process died
        for n in 2...members { cluster[n].peerUnreachable(ScriptedCluster.id(1)) }
        var ticks = 0
        while cluster.leaders.allSatisfy({ $0 == ScriptedCluster.id(1) }) && ticks < options.electionTicks * 3 {
            ticks += 1
            for n in 2...members { cluster[n].tick() }
            cluster.deliverAll()
        }
        #expect(cluster.leaders.contains { $0 != ScriptedCluster.id(1) })
        #expect(ticks <= 4, "took \(ticks) ticks")
    }

    @Test("a wrong report that a live leader is unreachable changes no term: the other follower refuses the pre-vote")
    func spuriousLossDisruptsNothing() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        let term = cluster[1].term
        cluster.cutLink(1, 2)  // n2 alone lost its link to the leader; n3 still hears it
        cluster[2].peerUnreachable(ScriptedCluster.id(1))
        for _ in 0..<6 {
            cluster[2].tick()
            cluster[3].tick()
            cluster.deliverAll()
        }
        #expect(cluster.leaders == [ScriptedCluster.id(1)])
        #expect(cluster[1].term == term)
        #expect(cluster[3].term == term)
        cluster.heal()
        cluster.tickAll(2)
        #expect(cluster[2].leader == ScriptedCluster.id(1))
    }

    @Test("an append that matches the log never truncates entries after it (stale or reordered appends)")
    func noTruncationOnNonConflictingAppend() throws {
        var follower = RaftNode(id: Self.n(2), restoring: PersistentState.bootstrapFollower(), options: RaftOptions(), seed: 1)
        let entries = (2...10).map { LogEntry(term: 2, index: LogIndex(UInt64($0)), payload: .command([UInt8($0)])) }
        follower.step(RaftMessage(from: Self.n(1), to: Self.n(2), term: 2, kind: .append(prevIndex: 1, prevTerm: 1, entries: entries, commit: 1)))
        follower.advance(follower.ready())
        #expect(follower.lastIndex == 10)
        // A delayed, older append covering 5...6 arrives after.
        follower.step(RaftMessage(from: Self.n(1), to: Self.n(2), term: 2, kind: .append(prevIndex: 4, prevTerm: 2, entries: Array(entries[3...4]), commit: 1)))
        #expect(follower.lastIndex == 10)
        let ready = follower.ready()
        #expect(ready.entries.isEmpty)
        #expect(ready.messages.contains { if case .appendResponse(true, 6, _) = $0.kind { true } else { false } })
    }

    @Test("a conflicting append truncates the follower's divergent suffix and replaces it")
    func conflictingAppendTruncates() throws {
        var follower = RaftNode(id: Self.n(2), restoring: PersistentState.bootstrapFollower(), options: RaftOptions(), seed: 1)
        let stale = (2...5).map { LogEntry(term: 2, index: LogIndex(UInt64($0)), payload: .command([1])) }
        follower.step(RaftMessage(from: Self.n(1), to: Self.n(2), term: 2, kind: .append(prevIndex: 1, prevTerm: 1, entries: stale, commit: 1)))
        follower.advance(follower.ready())
        let newer = [LogEntry(term: 3, index: 3, payload: .command([2]))]
        follower.step(RaftMessage(from: Self.n(3), to: Self.n(2), term: 3, kind: .append(prevIndex: 2, prevTerm: 2, entries: newer, commit: 1)))
        #expect(follower.lastIndex == 3)
        #expect(follower.entry(at: 3)?.term == 3)
        let ready = follower.ready()
        #expect(ready.entries.first?.index == 3, "the runtime must be told to replace its log from index 3")
    }

    @Test("the entry at a snapshot's index matches by the snapshot's term (no off-by-one at the boundary)")
    func snapshotBoundary() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        cluster.cutLink(1, 3)
        for i in 0..<10 { _ = try cluster[1].propose(Array("v\(i)".utf8)) }
        cluster.deliverAll()
        let leader = cluster[1]
        let snapshotIndex = leader.appliedIndex
        let metadata = SnapshotMetadata(index: snapshotIndex, term: leader.entry(at: snapshotIndex)!.term, configuration: leader.configuration)
        cluster[1].snapshotTaken(Snapshot(metadata: metadata, data: Array("state".utf8)), compactThrough: snapshotIndex)
        #expect(cluster[1].firstIndex == snapshotIndex.next)
        // n3 missed everything: it needs the snapshot, then appends continue right after its index.
        cluster.heal()
        _ = try cluster[1].propose(Array("after".utf8))
        cluster.deliverAll()
        cluster.tickAll(2)
        #expect(cluster[3].lastIndex == cluster[1].lastIndex)
        #expect(cluster[3].firstIndex == snapshotIndex.next)
        #expect(cluster.commands(on: 3) == ["after"], "n3 applies only what came after the snapshot")
        #expect(cluster.readies[Self.n(3)]!.contains { $0.snapshot?.metadata == metadata })
    }

    @Test("pre-vote with check-quorum: a node cut off from the leader cannot depose it, and rejoins as a follower")
    func preVoteWithCheckQuorum() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        let term = cluster[1].term
        cluster.cutLink(1, 3)
        // n3 stops hearing the leader and campaigns; n2 still hears the leader and ignores the pre-vote.
        cluster.tickAll(30)
        #expect(cluster.leaders == [Self.n(1)])
        #expect(cluster[1].term == term, "the cut-off node disrupted the leader")
        #expect(cluster[3].term == term, "a pre-vote must not raise the candidate's term")
        cluster.heal()
        cluster.tickAll(3)
        #expect(cluster[3].role == .follower)
        #expect(cluster[3].leader == Self.n(1))
        #expect(cluster[1].term == term)
    }

    @Test("check-quorum: a leader that loses its majority steps down")
    func checkQuorum() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        cluster.isolate(1)
        cluster.tickAll(25)
        #expect(cluster[1].role != .leader)
        // The other two elect a new leader in a higher term.
        #expect(cluster.leaders.count == 1)
        #expect(cluster.leaders.first != Self.n(1))
    }

    @Test("the single-server membership bug: no configuration change before the leader commits an entry of its term")
    func membershipWaitsForTermCommit() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.cutLink(1, 2)
        cluster.cutLink(1, 3)
        cluster[1].campaign()
        // Pretend it won (it cannot commit anything while cut off): force leadership through votes.
        for voter in 2...3 {
            cluster[1].step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: cluster[1].term.next, kind: .voteResponse(granted: true, preVote: true)))
        }
        for voter in 2...3 {
            cluster[1].step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: cluster[1].term, kind: .voteResponse(granted: true, preVote: false)))
        }
        cluster.process()
        #expect(cluster[1].role == .leader)
        #expect(throws: RaftProposalError.configurationChangeInProgress) {
            _ = try cluster[1].proposeConfigurationChange(.addLearner(Self.n(4)))
        }
        cluster.heal()
        cluster.tickAll(2)
        #expect(cluster[1].commitIndex == cluster[1].lastIndex)
        _ = try cluster[1].proposeConfigurationChange(.addLearner(Self.n(4)))
        #expect(throws: RaftProposalError.configurationChangeInProgress) {
            _ = try cluster[1].proposeConfigurationChange(.addLearner(Self.n(5)))
        }
    }

    @Test("a single-member cluster acknowledges a write only after it is persisted")
    func singleMemberAcknowledgesAfterFsync() throws {
        var node = RaftNode(id: Self.n(1), restoring: .bootstrap(Self.n(1)), options: RaftOptions(), seed: 1)
        node.campaign()
        #expect(node.role == .leader)
        var ready = node.ready()
        node.advance(ready)
        ready = node.ready()
        node.advance(ready)
        let (index, _) = try node.propose(Array("w".utf8))
        ready = node.ready()
        #expect(ready.entries.map(\.index).contains(index))
        #expect(!ready.committedEntries.map(\.index).contains(index), "applied before the entry was durable")
        #expect(node.commitIndex < index)
        node.advance(ready)  // the runtime reports the fsync done
        ready = node.ready()
        #expect(ready.committedEntries.map(\.index).contains(index))
    }

    @Test("ReadIndex: a read is answered only after a quorum confirms leadership, at the commit index")
    func readIndex() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        _ = try cluster[1].propose(Array("a".utf8))
        cluster.deliverAll()
        cluster.isolate(1)
        try cluster[1].readIndex(context: 42)
        cluster.deliverAll()
        #expect(cluster.readStates[Self.n(1)]?.isEmpty ?? true, "a leader that cannot reach a quorum answered a read")
        cluster.heal()
        cluster.tickAll(1)
        try cluster[1].readIndex(context: 43)
        cluster.deliverAll()
        let reads = cluster.readStates[Self.n(1)] ?? []
        #expect(reads.map(\.context).contains(43))
        #expect(reads.first { $0.context == 43 }?.index == cluster[1].commitIndex)
        #expect(throws: RaftProposalError.self) { try cluster[2].readIndex(context: 1) }
    }

    @Test("a new leader answers no read until it has committed an entry of its own term")
    func readIndexWaitsForTermCommit() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.cutLink(1, 2)
        cluster.cutLink(1, 3)
        cluster[1].campaign()
        for voter in 2...3 {
            cluster[1].step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: cluster[1].term.next, kind: .voteResponse(granted: true, preVote: true)))
        }
        for voter in 2...3 {
            cluster[1].step(RaftMessage(from: Self.n(voter), to: Self.n(1), term: cluster[1].term, kind: .voteResponse(granted: true, preVote: false)))
        }
        try cluster[1].readIndex(context: 7)
        cluster.process()
        #expect(cluster.readStates[Self.n(1)]?.isEmpty ?? true)
        cluster.heal()
        cluster.tickAll(3)
        #expect(cluster.readStates[Self.n(1)]?.map(\.context) == [7])
    }

    @Test("leadership transfer hands over to an up-to-date target, which wins without waiting for a timeout")
    func leadershipTransfer() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        _ = try cluster[1].propose(Array("before".utf8))
        cluster.deliverAll()
        try cluster[1].transferLeadership(to: Self.n(3))
        cluster.deliverAll()
        #expect(cluster.leaders == [Self.n(3)])
        _ = try cluster[3].propose(Array("after".utf8))
        cluster.deliverAll()
        #expect(cluster.commands(on: 1) == ["before", "after"])
    }

    @Test("membership: a learner catches up without voting, is promoted, and the leader can remove itself")
    func membershipChanges() throws {
        var cluster = ScriptedCluster(voters: 3)
        cluster.elect(1)
        cluster.nodes[Self.n(4)] = RaftNode(id: Self.n(4), restoring: PersistentState(), options: RaftOptions(), seed: 4)
        _ = try cluster[1].proposeConfigurationChange(.addLearner(Self.n(4)))
        cluster.deliverAll()
        cluster.tickAll(2)
        #expect(cluster[1].configuration.learners == [Self.n(4)])
        #expect(cluster[4].lastIndex == cluster[1].lastIndex, "the learner did not catch up")
        #expect(cluster[1].configuration.quorum == 2, "a learner must not count for quorum")
        _ = try cluster[1].proposeConfigurationChange(.promote(Self.n(4)))
        cluster.deliverAll()
        #expect(cluster[1].configuration.voters.count == 4)
        // The leader removes itself; once that commits it steps down and the rest elect a new leader.
        _ = try cluster[1].proposeConfigurationChange(.remove(Self.n(1)))
        cluster.deliverAll()
        cluster.tickAll(2)
        #expect(cluster[1].role != .leader)
        cluster.nodes[Self.n(1)] = nil
        cluster.tickAll(30)
        #expect(cluster.leaders.count == 1)
        let newLeader = cluster.leaders.first!
        #expect(cluster.nodes[newLeader]!.configuration.voters == [Self.n(2), Self.n(3), Self.n(4)])
    }
}

extension PersistentState {
    /// A follower that knows only the bootstrap entry (n1 as the first voter) and n2, n3 as voters.
    static func bootstrapFollower() -> PersistentState {
        PersistentState(
            hardState: HardState(term: 1, votedFor: nil, commit: 1),
            snapshot: Snapshot(metadata: SnapshotMetadata(index: 0, term: 0, configuration: RaftConfiguration(voters: [NodeID("n2"), NodeID("n3")])), data: []),
            entries: [LogEntry(term: 1, index: 1, payload: .configuration(.promote(NodeID("n1"))))])
    }
}
