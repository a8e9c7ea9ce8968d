public import ClusterModel

/// Tunables of the Raft core, in ticks and counts. The runtime decides how long a tick is (default 100 ms).
public struct RaftOptions: Sendable {
    /// Ticks without hearing from a leader before a follower campaigns; randomized in [n, 2n) (§5.2).
    public var electionTicks = 10
    /// Ticks between a leader's heartbeats.
    public var heartbeatTicks = 1
    /// Appends in flight per follower before the leader waits for answers (pipelining window).
    public var maxInflightAppends = 64
    /// Soft cap on the entries of one append, in bytes.
    public var maxAppendBytes = 1 << 20
    /// Campaign with a pre-vote first, so a partitioned node does not disrupt the cluster on return (§9.6).
    public var preVote = true
    /// A leader that has not heard from a quorum within an election timeout steps down (§6.2).
    public var checkQuorum = true
    /// Bytes per InstallSnapshot chunk.
    public var snapshotChunkBytes = 512 << 10

    public init() {}
}

public enum RaftRole: String, Sendable, Hashable {
    case follower, preCandidate, candidate, leader
}

/// Why a proposal or request was refused.
public enum RaftProposalError: Error, Hashable, Sendable {
    /// Only the leader takes proposals; `leader` is who it is, if known.
    case notLeader(leader: NodeID?)
    /// A leadership transfer is under way; retry once it completes.
    case transferInProgress
    /// One membership change at a time, and not before the leader committed an entry of its term.
    case configurationChangeInProgress
    /// The change makes no sense for the current configuration (e.g. promoting a non-learner).
    case invalidConfigurationChange(String)
}

/// What the runtime must do next, in this order: send `earlyMessages` (at once, or while persisting),
/// persist `hardState`, `snapshot` and `entries` (fsync), then send `messages`, then apply `snapshot` and
/// `committedEntries` to the state machine, then call `advance`. Persist-before-send is what makes a granted
/// vote or an acknowledged append survive a crash. The member may keep stepping messages while the write is
/// in flight, but must not ask for the next `ready` before calling `advance`.
public struct Ready: Sendable {
    public var hardState: HardState?
    /// Entries to make durable. Everything in the durable log at or after the first entry's index is
    /// replaced (a conflicting suffix was truncated).
    public var entries: [LogEntry]
    /// A snapshot received from the leader, to persist and load into the state machine. It replaces the
    /// whole durable log: every persisted entry is discarded (then `entries`, if any, follow it).
    public var snapshot: Snapshot?
    /// A leader's requests (appends, heartbeats, snapshot chunks, timeout-now) of a term already durable: they
    /// promise nothing about this member's disk, so they may leave before the write is done. The leader
    /// replicates in parallel with its own fsync and counts itself toward a quorum only once durable
    /// (dissertation §10.2.1), so one fsync round trip, not two, sits on the commit path.
    public var earlyMessages: [RaftMessage]
    /// Messages that speak for what this write makes durable (votes, append acknowledgements): sent after it.
    public var messages: [RaftMessage]
    public var committedEntries: [LogEntry]
    public var readStates: [ReadState]

    public var isEmpty: Bool {
        hardState == nil && entries.isEmpty && snapshot == nil && earlyMessages.isEmpty && messages.isEmpty
            && committedEntries.isEmpty && readStates.isEmpty
    }

    /// Every message, early ones first: for runtimes that persist before sending anything.
    public var allMessages: [RaftMessage] { earlyMessages + messages }
}

/// What a member restarts from: everything it persisted.
public struct PersistentState: Sendable {
    public var hardState: HardState
    public var snapshot: Snapshot?
    public var entries: [LogEntry]

    public init(hardState: HardState = HardState(), snapshot: Snapshot? = nil, entries: [LogEntry] = []) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }

    /// The state of the first member of a new cluster: a log whose first entry makes it the only voter.
    public static func bootstrap(_ id: NodeID) -> PersistentState {
        PersistentState(
            hardState: HardState(term: 1, votedFor: nil, commit: 1),
            entries: [LogEntry(term: 1, index: 1, payload: .configuration(.promote(id)))])
    }
}

/// The Raft consensus algorithm as a pure state machine (after etcd-io/raft): inputs are `tick`, `step`
/// (a message), `propose`, `readIndex`, `transferLeadership`; outputs come from `ready`. No I/O, no clock
/// (time is ticks), randomness only from the seed. Section numbers cite the Raft paper (Ongaro & Ousterhout
/// 2014) and, where noted, Ongaro's dissertation.
public struct RaftNode: Sendable {
    public let id: NodeID
    public let options: RaftOptions

    public private(set) var role: RaftRole = .follower
    public private(set) var term: Term
    public private(set) var votedFor: NodeID?
    public private(set) var leader: NodeID?
    /// The latest configuration in the log (it takes effect when appended, dissertation §4.1).
    public private(set) var configuration: RaftConfiguration

    var log: RaftLog
    private var snapshotBase: RaftConfiguration
    private var progress: [NodeID: Progress] = [:]
    private var votes: [NodeID: Bool] = [:]
    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTimeout = 0
    /// Seeded, so every run replays.
    private var random: SplitMix64
    /// Index of the last configuration entry not yet known committed; no new change until it is.
    private var pendingConfigurationIndex: LogIndex = 0
    public private(set) var transferTarget: NodeID?

    private var messages: [RaftMessage] = []
    /// Followers owed an append at the next `ready` (see `scheduleBroadcast`).
    private var appendsDue: Set<NodeID> = []
    private var readStates: [ReadState] = []
    private var pendingReads: [(context: UInt64, index: LogIndex, acks: Set<NodeID>)] = []
    /// Reads asked before this leader committed an entry of its term; served once it has (§6.4).
    private var readsAwaitingCommit: [UInt64] = []
    private var lastHardState: HardState
    private var snapshotToPersist: Snapshot?
    /// The latest local snapshot, which a leader streams to followers that need compacted entries.
    private var latestSnapshot: Snapshot?
    /// A snapshot being received in chunks.
    private var incomingSnapshot: (metadata: SnapshotMetadata, data: [UInt8])?

    public init(id: NodeID, restoring state: PersistentState, options: RaftOptions = .init(), seed: UInt64) {
        self.id = id
        self.options = options
        self.random = SplitMix64(seed: seed ^ UInt64(truncatingIfNeeded: id.rawValue.hashValueStable))
        term = state.hardState.term
        votedFor = state.hardState.votedFor
        log = RaftLog(snapshot: state.snapshot?.metadata, entries: state.entries, committed: state.hardState.commit)
        snapshotBase = state.snapshot?.metadata.configuration ?? RaftConfiguration(voters: [])
        configuration = snapshotBase
        latestSnapshot = state.snapshot
        lastHardState = state.hardState
        recomputeConfiguration()
        resetElectionTimeout()
    }

    // MARK: - Observers

    public var commitIndex: LogIndex { log.committed }
    public var appliedIndex: LogIndex { log.applied }
    public var lastIndex: LogIndex { log.lastIndex }
    public var persistedIndex: LogIndex { log.persisted }
    public var hardState: HardState { HardState(term: term, votedFor: votedFor, commit: log.committed) }
    public var isVoter: Bool { configuration.voters.contains(id) }

    /// The entry at `index`, if the log still holds it (tests and diagnostics).
    public func entry(at index: LogIndex) -> LogEntry? { log.entry(at: index) }
    public var firstIndex: LogIndex { log.firstIndex }

    /// The leader's view of each follower, for diagnostics.
    public var progressDescription: String {
        progress.keys.sorted().map { peer in
            let p = progress[peer]!
            return "\(peer): match \(p.match) next \(p.next) \(p.state) probeSent \(p.probeSent) inflight \(p.inflight.count)"
        }.joined(separator: "; ")
    }

    /// Match index of each member as the leader sees it (empty on followers).
    public var matchIndexes: [NodeID: LogIndex] { progress.mapValues(\.match) }

    // MARK: - Inputs

    /// One unit of logical time.
    public mutating func tick() {
        electionElapsed += 1
        if role == .leader {
            heartbeatElapsed += 1
            if electionElapsed >= options.electionTicks {
                electionElapsed = 0
                if options.checkQuorum && !quorumWasActive() {
                    becomeFollower(term: term, leader: nil)
                    return
                }
                transferTarget = nil  // a transfer that did not finish within an election timeout is abandoned
            }
            if heartbeatElapsed >= options.heartbeatTicks {
                heartbeatElapsed = 0
                broadcastHeartbeat(readContext: nil)
            }
        } else if electionElapsed >= randomizedElectionTimeout {
            electionElapsed = 0
            if isVoter { campaign(preVote: options.preVote, transfer: false) }
        }
    }

    /// The runtime saw its connection from `peer` break (the process died, the host went away). If `peer` is
    /// the leader, don't wait out a whole election timeout: forget the leader, so its lease no longer makes
    /// this member refuse other candidates' pre-votes, and campaign within a few ticks. The followers that
    /// all saw the same crash go in turn (two ticks apart by their rank among the remaining voters, plus a
    /// random tick), so they do not split the vote; if the first cannot win (its log is behind), the next
    /// one tries. Safe and undisruptive even when the signal is wrong: pre-vote changes no term, and members
    /// still hearing a live leader refuse it.
    public mutating func peerUnreachable(_ peer: NodeID) {
        guard role == .follower, leader == peer, isVoter else { return }
        leader = nil
        let rank = configuration.voters.filter { $0 != peer }.sorted().firstIndex(of: id) ?? 0
        let remaining = 1 + 2 * rank + Int(random.next() % 2)
        electionElapsed = max(electionElapsed, randomizedElectionTimeout - min(remaining, randomizedElectionTimeout))
    }

    /// Campaign now (tests, and a single member's first election).
    public mutating func campaign() {
        guard role != .leader, isVoter else { return }
        campaign(preVote: options.preVote, transfer: false)
    }

    /// Appends a command; returns where it will be in the log. It is committed once `committedEntries`
    /// delivers an entry with this index and term.
    public mutating func propose(_ command: [UInt8]) throws(RaftProposalError) -> (index: LogIndex, term: Term) {
        try propose(payload: .command(command))
    }

    /// Proposes one membership change (add a learner, promote it, or remove a member).
    public mutating func proposeConfigurationChange(_ change: ConfigurationChange) throws(RaftProposalError) -> (index: LogIndex, term: Term) {
        switch change {
        case .addLearner(let node):
            guard !configuration.members.contains(node) else {
                throw .invalidConfigurationChange("\(node) is already a member")
            }
        case .promote(let node):
            guard configuration.learners.contains(node) else {
                throw .invalidConfigurationChange("\(node) is not a learner; add it as a learner first")
            }
        case .remove(let node):
            guard configuration.members.contains(node) else {
                throw .invalidConfigurationChange("\(node) is not a member")
            }
            guard !(configuration.voters == [node]) else {
                throw .invalidConfigurationChange("\(node) is the last voter")
            }
        }
        return try propose(payload: .configuration(change))
    }

    private mutating func propose(payload: EntryPayload) throws(RaftProposalError) -> (index: LogIndex, term: Term) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferTarget == nil else { throw .transferInProgress }
        if case .configuration = payload {
            // The 2015 single-server fix: no change until an entry of this term (and every earlier change)
            // is committed.
            guard pendingConfigurationIndex <= log.committed, log.term(at: log.committed) == term else {
                throw .configurationChangeInProgress
            }
        }
        let entry = log.appendAsLeader(term: term, payload: payload)
        if case .configuration = payload {
            pendingConfigurationIndex = entry.index
            recomputeConfiguration()
        }
        scheduleBroadcast()
        return (entry.index, entry.term)
    }

    /// Asks for a linearizable read point (ReadIndex, §6.4). The answer arrives in `Ready.readStates`
    /// with `context`. Only a leader answers.
    public mutating func readIndex(context: UInt64) throws(RaftProposalError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard log.term(at: log.committed) == term else {
            readsAwaitingCommit.append(context)
            return
        }
        startRead(context)
    }

    /// Hands leadership to `target` (dissertation §3.10): bring it up to date, then tell it to campaign.
    public mutating func transferLeadership(to target: NodeID) throws(RaftProposalError) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard target != id else { return }
        guard configuration.voters.contains(target) else {
            throw .invalidConfigurationChange("\(target) is not a voter")
        }
        transferTarget = target
        electionElapsed = 0
        if progress[target]?.match == log.lastIndex {
            send(to: target, .timeoutNow)
        } else {
            sendAppend(to: target)
        }
    }

    /// The runtime took a snapshot of the state machine at `snapshot.metadata.index` (≤ applied). Entries up
    /// to `compactThrough` are dropped from memory; a leader streams this snapshot to followers that need them.
    public mutating func snapshotTaken(_ snapshot: Snapshot, compactThrough: LogIndex) {
        guard snapshot.metadata.index <= log.applied else { return }
        if snapshot.metadata.index >= (latestSnapshot?.metadata.index ?? 0) {
            latestSnapshot = snapshot
        }
        let through = min(compactThrough, snapshot.metadata.index)
        if through > log.snapshotIndex {
            // The configuration at the new compaction point must be computed before its entries are dropped.
            let base = configurationAt(through)
            log.compact(through: through)
            snapshotBase = base
        }
    }

    // MARK: - Messages

    public mutating func step(_ message: RaftMessage) {
        guard message.to == id else { return }
        if message.term > term {
            switch message.kind {
            case .requestVote(_, _, _, let transfer):
                // A member that heard from a leader within the election timeout ignores vote requests, so a
                // node that was partitioned away cannot depose a working leader (§4.2.3 of the dissertation).
                let inLease = options.checkQuorum && leader != nil && electionElapsed < options.electionTicks
                if inLease && !transfer { return }
                if case .requestVote(_, _, true, _) = message.kind { break }  // a pre-vote changes no term
                becomeFollower(term: message.term, leader: nil)
            case .voteResponse(true, true):
                break  // a granted pre-vote carries the term the candidate will take, not a newer leader's
            case .append, .heartbeat, .installSnapshot:
                becomeFollower(term: message.term, leader: message.from)
            default:
                becomeFollower(term: message.term, leader: nil)
            }
        } else if message.term < term {
            switch message.kind {
            case .append, .heartbeat:
                // A stale leader learns of the newer term from this answer and steps down. Needed with
                // check-quorum and pre-vote, where a follower's term may have moved on silently.
                send(to: message.from, .appendResponse(accepted: false, index: 0, hint: 0))
            case .requestVote(_, _, true, _):
                send(to: message.from, .voteResponse(granted: false, preVote: true))
            default:
                break
            }
            return
        }

        if case .requestVote(let lastIndex, let lastTerm, let preVote, _) = message.kind {
            voteRequested(by: message.from, term: message.term, lastIndex: lastIndex, lastTerm: lastTerm, preVote: preVote)
            return
        }
        switch role {
        case .leader: stepLeader(message)
        case .candidate, .preCandidate: stepCandidate(message)
        case .follower: stepFollower(message)
        }
    }

    private mutating func voteRequested(by candidate: NodeID, term requested: Term, lastIndex: LogIndex, lastTerm: Term, preVote: Bool) {
        let canVote = votedFor == candidate
            || (votedFor == nil && leader == nil)
            || (preVote && requested > term)
        if canVote && log.isUpToDate(lastIndex: lastIndex, lastTerm: lastTerm) {
            // A pre-vote answer carries the term it was asked about, so the pre-candidate counts it.
            messages.append(RaftMessage(from: id, to: candidate, term: requested, kind: .voteResponse(granted: true, preVote: preVote)))
            if !preVote {
                electionElapsed = 0
                votedFor = candidate
            }
        } else {
            send(to: candidate, .voteResponse(granted: false, preVote: preVote))
        }
    }

    private mutating func stepFollower(_ message: RaftMessage) {
        switch message.kind {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            electionElapsed = 0
            leader = message.from
            appendReceived(from: message.from, prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit)
        case .heartbeat(let commit, let readContext):
            electionElapsed = 0
            leader = message.from
            if commit > log.committed { log.committed = min(commit, log.lastIndex) }
            send(to: message.from, .heartbeatResponse(readContext: readContext))
        case .installSnapshot(let metadata, let offset, let chunk, let done):
            electionElapsed = 0
            leader = message.from
            snapshotChunkReceived(from: message.from, metadata: metadata, offset: offset, chunk: chunk, done: done)
        case .timeoutNow:
            if isVoter { campaign(preVote: false, transfer: true) }
        default:
            break
        }
    }

    private mutating func stepCandidate(_ message: RaftMessage) {
        switch message.kind {
        case .append, .heartbeat, .installSnapshot:
            // A leader exists for this term: follow it.
            becomeFollower(term: message.term, leader: message.from)
            stepFollower(message)
        case .voteResponse(let granted, let preVote):
            guard preVote == (role == .preCandidate) else { return }
            votes[message.from] = granted
            let granted = configuration.voters.filter { votes[$0] == true }.count
            let rejected = configuration.voters.filter { votes[$0] == false }.count
            if granted >= configuration.quorum {
                if role == .preCandidate {
                    campaign(preVote: false, transfer: false)
                } else {
                    becomeLeader()
                }
            } else if rejected >= configuration.quorum {
                becomeFollower(term: term, leader: nil)
            }
        default:
            break
        }
    }

    private mutating func stepLeader(_ message: RaftMessage) {
        let peer = message.from
        guard progress[peer] != nil else { return }
        progress[peer]!.recentActive = true
        switch message.kind {
        case .appendResponse(let accepted, let index, let hint):
            if accepted {
                let wasProbe = progress[peer]!.state == .probe
                if progress[peer]!.acknowledged(index) {
                    if wasProbe { progress[peer]!.becomeReplicate() }
                    if maybeCommit() {
                        scheduleBroadcast()
                    } else {
                        appendsDue.insert(peer)
                    }
                    if transferTarget == peer && progress[peer]!.match == log.lastIndex {
                        send(to: peer, .timeoutNow)
                    }
                }
            } else if progress[peer]!.rejected(index, hint: hint) {
                sendAppend(to: peer)
            }
        case .heartbeatResponse(let readContext):
            if progress[peer]!.state == .probe { progress[peer]!.probeSent = false }
            // Appends in a full window may all have been lost: the follower is alive, so free one slot and
            // send again; a gap makes it reject, which drops the leader back to probing (etcd does the same).
            if progress[peer]!.state == .replicate, progress[peer]!.inflight.count >= options.maxInflightAppends {
                progress[peer]!.inflight.removeFirst()
            }
            if progress[peer]!.match < log.lastIndex { sendAppend(to: peer) }
            if let readContext { readAcknowledged(context: readContext, by: peer) }
        case .snapshotResponse(let offset, let installedIndex, let rejected):
            guard case .snapshot = progress[peer]!.state else { return }
            if rejected {
                progress[peer]!.becomeProbe()
            } else if let installedIndex {
                _ = progress[peer]!.acknowledged(installedIndex)
                progress[peer]!.becomeProbe()
                progress[peer]!.becomeReplicate()
            } else {
                progress[peer]!.snapshotOffset = offset
            }
            sendAppend(to: peer)
        default:
            break
        }
    }

    // MARK: - Follower work

    private mutating func appendReceived(from leader: NodeID, prevIndex: LogIndex, prevTerm: Term, entries: [LogEntry], commit: LogIndex) {
        if prevIndex < log.committed {
            // Everything up to our commit index already matches the leader's log (Log Matching).
            send(to: leader, .appendResponse(accepted: true, index: log.committed, hint: 0))
            return
        }
        guard log.matches(index: prevIndex, term: prevTerm) else {
            send(to: leader, .appendResponse(accepted: false, index: prevIndex, hint: log.lastIndex))
            return
        }
        guard log.appendFromLeader(entries) else {
            // Would rewrite committed entries: a broken leader or a bug. Refuse rather than corrupt.
            send(to: leader, .appendResponse(accepted: false, index: prevIndex, hint: log.committed))
            return
        }
        recomputeConfiguration()
        let lastNew = LogIndex(prevIndex.rawValue + UInt64(entries.count))
        if commit > log.committed { log.committed = min(commit, lastNew) }
        send(to: leader, .appendResponse(accepted: true, index: lastNew, hint: 0))
    }

    private mutating func snapshotChunkReceived(from leader: NodeID, metadata: SnapshotMetadata, offset: Int, chunk: [UInt8], done: Bool) {
        if metadata.index <= log.committed {
            send(to: leader, .snapshotResponse(offset: 0, installedIndex: log.committed, rejected: false))
            return
        }
        if log.matches(index: metadata.index, term: metadata.term) {
            // Our log already holds what the snapshot covers: that prefix is committed; no need to install.
            incomingSnapshot = nil
            log.committed = metadata.index
            send(to: leader, .snapshotResponse(offset: 0, installedIndex: metadata.index, rejected: false))
            return
        }
        if offset == 0 || incomingSnapshot?.metadata != metadata {
            guard offset == 0 else {
                send(to: leader, .snapshotResponse(offset: 0, installedIndex: nil, rejected: true))
                return
            }
            incomingSnapshot = (metadata, [])
        }
        guard incomingSnapshot!.data.count == offset else {
            // A lost or reordered chunk: tell the leader where to resume.
            send(to: leader, .snapshotResponse(offset: incomingSnapshot!.data.count, installedIndex: nil, rejected: false))
            return
        }
        incomingSnapshot!.data.append(contentsOf: chunk)
        guard done else {
            send(to: leader, .snapshotResponse(offset: incomingSnapshot!.data.count, installedIndex: nil, rejected: false))
            return
        }
        let snapshot = Snapshot(metadata: metadata, data: incomingSnapshot!.data)
        incomingSnapshot = nil
        log.restore(metadata)
        snapshotBase = metadata.configuration
        recomputeConfiguration()
        snapshotToPersist = snapshot
        latestSnapshot = snapshot
        send(to: leader, .snapshotResponse(offset: snapshot.data.count, installedIndex: metadata.index, rejected: false))
    }

    // MARK: - Leader work

    private mutating func sendAppend(to peer: NodeID) {
        guard var state = progress[peer], peer != id else { return }
        guard !state.isPaused(maxInflight: options.maxInflightAppends) else {
            if case .snapshot = state.state { sendSnapshotChunk(to: peer) }
            return
        }
        let prevIndex = state.next.previous
        guard let prevTerm = log.term(at: prevIndex) else {
            // The entries it needs were compacted into a snapshot.
            guard let snapshot = latestSnapshot else { return }
            state.becomeSnapshot(index: snapshot.metadata.index)
            progress[peer] = state
            sendSnapshotChunk(to: peer)
            return
        }
        let entries = log.entries(from: state.next, maxBytes: options.maxAppendBytes)
        send(to: peer, .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: log.committed))
        if let last = entries.last {
            switch state.state {
            case .replicate:
                state.next = last.index.next
                state.inflight.append(last.index)
            case .probe:
                state.probeSent = true
            case .snapshot:
                break
            }
        } else if state.state == .probe {
            state.probeSent = true
        }
        progress[peer] = state
    }

    private mutating func sendSnapshotChunk(to peer: NodeID) {
        guard let snapshot = latestSnapshot, case .snapshot = progress[peer]?.state else { return }
        let offset = min(progress[peer]!.snapshotOffset, snapshot.data.count)
        let end = min(offset + options.snapshotChunkBytes, snapshot.data.count)
        send(to: peer, .installSnapshot(
            metadata: snapshot.metadata, offset: offset, chunk: Array(snapshot.data[offset..<end]),
            done: end == snapshot.data.count))
    }

    /// Appends are sent when the runtime next collects a Ready, not at once: every proposal and
    /// acknowledgement stepped in between then travels in one append per follower, instead of one each.
    private mutating func scheduleBroadcast() {
        for peer in configuration.members where peer != id { appendsDue.insert(peer) }
    }

    private mutating func sendDueAppends() {
        guard !appendsDue.isEmpty else { return }
        let due = appendsDue.sorted()
        appendsDue = []
        guard role == .leader else { return }
        for peer in due { sendAppend(to: peer) }
    }

    private mutating func broadcastHeartbeat(readContext: UInt64?) {
        for peer in configuration.members.sorted() where peer != id {
            let commit = min(progress[peer]?.match ?? 0, log.committed)
            send(to: peer, .heartbeat(commit: commit, readContext: readContext))
            if case .snapshot = progress[peer]?.state { sendSnapshotChunk(to: peer) }
        }
    }

    /// Advances the commit index to the highest index a quorum of voters holds, but only if that entry is of
    /// the current term (§5.4.2: older-term entries are committed indirectly; Figure 8).
    @discardableResult
    private mutating func maybeCommit() -> Bool {
        let matches = configuration.voters.map { voter -> LogIndex in
            voter == id ? log.persisted : (progress[voter]?.match ?? 0)
        }.sorted(by: >)
        guard !matches.isEmpty else { return false }
        let candidate = matches[configuration.quorum - 1]
        guard candidate > log.committed, log.term(at: candidate) == term else { return false }
        log.committed = candidate
        committedAdvanced()
        return true
    }

    private mutating func committedAdvanced() {
        if log.term(at: log.committed) == term, !readsAwaitingCommit.isEmpty {
            let waiting = readsAwaitingCommit
            readsAwaitingCommit = []
            for context in waiting { startRead(context) }
        }
        // A leader removed from the configuration steps down once the change is committed (§4.2.2).
        if role == .leader, !configuration.voters.contains(id), pendingConfigurationIndex <= log.committed {
            becomeFollower(term: term, leader: nil)
        }
    }

    private mutating func startRead(_ context: UInt64) {
        if configuration.voters == [id] {
            readStates.append(ReadState(context: context, index: log.committed))
            return
        }
        pendingReads.append((context, log.committed, [id]))
        broadcastHeartbeat(readContext: context)
    }

    private mutating func readAcknowledged(context: UInt64, by peer: NodeID) {
        guard let position = pendingReads.firstIndex(where: { $0.context == context }) else { return }
        if configuration.voters.contains(peer) { pendingReads[position].acks.insert(peer) }
        guard pendingReads[position].acks.filter(configuration.voters.contains).count >= configuration.quorum else { return }
        // A quorum confirmed leadership at this point, which covers every read issued before it too.
        for read in pendingReads[...position] {
            readStates.append(ReadState(context: read.context, index: read.index))
        }
        pendingReads.removeSubrange(...position)
    }

    private mutating func quorumWasActive() -> Bool {
        var active = 0
        for voter in configuration.voters {
            if voter == id || progress[voter]?.recentActive == true { active += 1 }
        }
        for peer in progress.keys { progress[peer]!.recentActive = false }
        return active >= configuration.quorum
    }

    // MARK: - Role changes

    private mutating func campaign(preVote: Bool, transfer: Bool) {
        if preVote {
            role = .preCandidate
            // Keeps term and vote; forgets the leader so it stops rejecting other candidates' pre-votes.
            leader = nil
        } else {
            role = .candidate
            term = term.next
            votedFor = id
            leader = nil
        }
        votes = [id: true]
        electionElapsed = 0
        resetElectionTimeout()
        let campaignTerm = preVote ? term.next : term
        if configuration.voters.filter({ votes[$0] == true }).count >= configuration.quorum {
            if preVote { campaign(preVote: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        for voter in configuration.voters.sorted() where voter != id {
            messages.append(RaftMessage(
                from: id, to: voter, term: campaignTerm,
                kind: .requestVote(lastIndex: log.lastIndex, lastTerm: log.lastTerm, preVote: preVote, transfer: transfer)))
        }
    }

    private mutating func becomeFollower(term newTerm: Term, leader newLeader: NodeID?) {
        if newTerm > term {
            term = newTerm
            votedFor = nil
        }
        role = .follower
        leader = newLeader
        electionElapsed = 0
        transferTarget = nil
        progress = [:]
        appendsDue = []
        pendingReads = []
        readsAwaitingCommit = []
        resetElectionTimeout()
    }

    private mutating func becomeLeader() {
        role = .leader
        leader = id
        transferTarget = nil
        heartbeatElapsed = 0
        electionElapsed = 0
        progress = [:]
        for member in configuration.members {
            var state = Progress(next: log.lastIndex.next)
            if member == id { state.match = log.persisted }
            state.recentActive = true
            progress[member] = state
        }
        // Any configuration entry still uncommitted blocks new changes until this term's entry commits.
        pendingConfigurationIndex = log.lastIndex
        _ = log.appendAsLeader(term: term, payload: .empty)
        scheduleBroadcast()
        maybeCommit()
    }

    private mutating func resetElectionTimeout() {
        randomizedElectionTimeout = options.electionTicks + Int(random.next() % UInt64(options.electionTicks))
    }

    /// The configuration is the snapshot's plus every configuration entry after it, in order.
    private mutating func recomputeConfiguration() {
        configuration = configurationAt(log.lastIndex)
        guard role == .leader else { return }
        for member in configuration.members where progress[member] == nil {
            var state = Progress(next: log.lastIndex.next)
            state.recentActive = true
            progress[member] = state
        }
        for member in progress.keys where !configuration.members.contains(member) {
            progress[member] = nil
        }
    }

    private func configurationAt(_ index: LogIndex) -> RaftConfiguration {
        var result = snapshotBase
        var position = log.firstIndex
        while position <= index, let entry = log.entry(at: position) {
            if case .configuration(let change) = entry.payload { result = change.applied(to: result) }
            position = position.next
        }
        return result
    }

    private mutating func send(to peer: NodeID, _ kind: RaftMessage.Kind) {
        messages.append(RaftMessage(from: id, to: peer, term: term, kind: kind))
    }

    // MARK: - Ready / advance

    public var hasReady: Bool {
        hardState != lastHardState || log.unstableFrom <= log.lastIndex || snapshotToPersist != nil
            || !messages.isEmpty || !appendsDue.isEmpty || !log.applicable().isEmpty || !readStates.isEmpty
    }

    /// Collects what the runtime must persist, send and apply. Call `advance` with it once done.
    public mutating func ready() -> Ready {
        sendDueAppends()
        let state = hardState
        let (early, late) = partitionEarlyMessages()
        let result = Ready(
            hardState: state == lastHardState ? nil : state,
            entries: log.takeUnstable(),
            snapshot: snapshotToPersist,
            earlyMessages: early,
            messages: late,
            committedEntries: log.applicable(),
            readStates: readStates)
        snapshotToPersist = nil
        messages = []
        readStates = []
        return result
    }

    /// Splits the outbox into what may leave before this member's pending write is durable and what must wait.
    private func partitionEarlyMessages() -> (early: [RaftMessage], late: [RaftMessage]) {
        var early: [RaftMessage] = []
        var late: [RaftMessage] = []
        for message in messages {
            // The term must already be durable: a message of a term this member could forget after a crash
            // would let it act twice in that term.
            guard message.term <= lastHardState.term else {
                late.append(message)
                continue
            }
            switch message.kind {
            case .append, .heartbeat, .installSnapshot, .timeoutNow: early.append(message)
            case .appendResponse, .heartbeatResponse, .requestVote, .voteResponse, .snapshotResponse: late.append(message)
            }
        }
        return (early, late)
    }

    /// The runtime persisted, sent and applied what `ready` gave it.
    public mutating func advance(_ ready: Ready) {
        if let state = ready.hardState { lastHardState = state }
        if let last = ready.entries.last {
            log.persisted(through: last.index, term: last.term)
            if role == .leader {
                progress[id]?.match = log.persisted
                if maybeCommit() { scheduleBroadcast() }
            }
        }
        if let last = ready.committedEntries.last, last.index > log.applied {
            log.applied = last.index
        }
    }
}

extension String {
    /// A hash that is the same in every process (Swift's `hashValue` is seeded per run).
    var hashValueStable: UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01B3
        }
        return hash
    }
}
