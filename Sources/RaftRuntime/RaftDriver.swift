public import ClusterModel
public import CoreMetrics
public import Logging
public import Raft

/// The state machine Raft replicates into. Called only by the driver, one entry at a time, in log order.
public protocol RaftApplication: Sendable {
    /// Applies a committed command entry; the result goes back to whoever proposed it. Throwing stops the
    /// driver: an entry this member cannot apply must never be skipped (that would diverge the replicas).
    func apply(index: LogIndex, command: [UInt8]) throws -> [UInt8]
    /// An entry with no command (a new leader's empty entry, a membership change) was committed.
    func skip(index: LogIndex)
    /// The state as of the last applied index, for a snapshot.
    func snapshot() -> [UInt8]
    /// The state as of the last applied index, captured now and encoded later, off the driver (a snapshot of a
    /// large state must not stall Raft). The default encodes at once.
    func snapshotEncoder() -> @Sendable () -> [UInt8]
    /// Replaces the state with a snapshot's.
    func restore(_ snapshot: Snapshot) throws
}

extension RaftApplication {
    public func snapshotEncoder() -> @Sendable () -> [UInt8] {
        let data = snapshot()
        return { data }
    }
}

/// How the driver reaches the other members. `send` must not block: the transport queues per peer and
/// drops (Raft retries) when a peer is slow or gone.
public protocol RaftTransport: Sendable {
    func send(_ messages: [RaftMessage])
}

/// Timing and housekeeping of a member.
public struct RaftDriverConfiguration: Sendable {
    /// One Raft tick. Heartbeats every `options.heartbeatTicks`, elections after `options.electionTicks`.
    public var tickInterval: Duration = .milliseconds(100)
    /// Elections after 8 to 16 silent ticks (0.8–1.6 s): a new leader within 2 s of the old one's loss, the
    /// fault suite's bound, with room for the vote and a commit.
    public var options: RaftOptions = {
        var options = RaftOptions()
        options.electionTicks = 8
        return options
    }()
    /// Take a snapshot and compact the log after this many applied entries.
    public var snapshotThreshold: UInt64 = 10_000
    /// Entries kept in the log behind a snapshot, so briefly lagging followers get entries, not a snapshot.
    public var retainedEntries: UInt64 = 1_000
    public var segmentSize = WriteAheadLog.defaultSegmentSize

    public init() {}
}

/// Why a proposal or read failed.
public enum RaftDriverError: Error, Sendable, Equatable, CustomStringConvertible {
    /// This member is not the leader; `leader` is who is, when known.
    case notLeader(leader: NodeID?)
    /// The entry was replaced by a new leader's log before it committed: it did not happen.
    case dropped
    /// The driver stopped (shutdown or a fatal storage error).
    case stopped
    case rejected(String)

    public var description: String {
        switch self {
        case .notLeader(let leader): "not the leader" + (leader.map { "; the leader is \($0)" } ?? "; no leader is known yet")
        case .dropped: "the write was not committed (leadership changed before it was); retry it"
        case .stopped: "the controller's Raft member has stopped"
        case .rejected(let why): why
        }
    }
}

/// Status for `controller ls` and metrics.
public struct RaftStatus: Sendable, Equatable {
    public var id: NodeID
    public var role: RaftRole
    public var term: Term
    public var leader: NodeID?
    public var commitIndex: LogIndex
    public var appliedIndex: LogIndex
    public var lastIndex: LogIndex
    public var configuration: RaftConfiguration
    /// Leader only: each member's match index.
    public var matchIndexes: [NodeID: LogIndex]
}

/// Runs a `RaftNode`: keeps time, persists (on its own disk thread) before sending what depends on it, sends,
/// applies in order, snapshots, and wakes proposers and readers. One actor per member; the core stays pure.
public actor RaftDriver {
    public nonisolated let id: NodeID
    private var node: RaftNode
    private let configuration: RaftDriverConfiguration
    private let disk: DiskWriter
    private let application: any RaftApplication
    private let transport: any RaftTransport
    private let logger: Logger
    private let metrics: RaftMetrics

    private var proposals: [LogIndex: (term: Term, continuation: CheckedContinuation<[UInt8], any Error>)] = [:]
    private var reads: [UInt64: CheckedContinuation<LogIndex, any Error>] = [:]
    /// Reads whose index is known, waiting for the state machine to apply it.
    private var readsAwaitingApply: [(index: LogIndex, continuation: CheckedContinuation<Void, any Error>)] = []
    private var nextReadContext: UInt64 = 1
    private var lastSnapshotIndex: LogIndex
    /// A snapshot is being encoded and saved in the background.
    private var snapshotInFlight = false
    private var snapshotJobs: AsyncStream<SnapshotJob>.Continuation?
    private var stoppedWith: (any Error)?
    private var wakeup: CheckedContinuation<Void, Never>?
    private var workPending = false

    /// Opens the member's storage under `directory` (`wal/`, `snap/`) and restores the application from the
    /// latest snapshot. `bootstrap` creates a one-member cluster when the storage is empty. `metrics` makes
    /// the member's gauges and latency timers (see docs/architecture.md, Metrics); by default none are kept.
    public init(
        id: NodeID, directory: String, bootstrap: Bool, application: any RaftApplication,
        transport: any RaftTransport, configuration: RaftDriverConfiguration = .init(), seed: UInt64,
        logger: Logger = Logger(label: "flotilla.raft"), metrics: any MetricsFactory = NOOPMetricsHandler.instance
    ) throws {
        try DurableFile.createDirectory(directory)
        let (wal, recovered) = try WriteAheadLog.open(
            directory: directory + "/wal", segmentSize: configuration.segmentSize, logger: logger)
        let snapshots = try SnapshotStore(directory: directory + "/snap")
        let snapshot = try snapshots.loadLatest()
        if let marker = recovered.snapshot, marker.index > (snapshot?.metadata.index ?? 0) {
            throw StorageError(
                .corrupt,
                "the write-ahead log in \(directory)/wal expects a snapshot at index \(marker.index) but \(directory)/snap has none that recent")
        }
        var state = PersistentState(hardState: recovered.hardState, snapshot: snapshot, entries: recovered.entries)
        if bootstrap && state.entries.isEmpty && snapshot == nil && state.hardState == HardState() {
            state = .bootstrap(id)
            try wal.append(entries: state.entries, hardState: state.hardState)
        }
        if let snapshot { try application.restore(snapshot) }
        self.id = id
        let node = RaftNode(id: id, restoring: state, options: configuration.options, seed: seed)
        self.node = node
        self.configuration = configuration
        let raftMetrics = RaftMetrics(factory: metrics)
        self.metrics = raftMetrics
        self.disk = DiskWriter(wal: wal, snapshots: snapshots, metrics: raftMetrics)
        self.application = application
        self.transport = transport
        self.logger = logger
        self.lastSnapshotIndex = snapshot?.metadata.index ?? 0
        raftMetrics.update(
            term: node.term, role: node.role, commitIndex: node.commitIndex, appliedIndex: node.appliedIndex, lastIndex: node.lastIndex)
    }

    // MARK: - Running

    /// Ticks and processes until cancelled or a fatal storage error (rethrown).
    public func run() async throws {
        let jobs = AsyncStream<SnapshotJob>.makeStream(bufferingPolicy: .bufferingNewest(1))
        snapshotJobs = jobs.continuation
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await self.tickLoop() }
            group.addTask { await self.snapshotLoop(jobs.stream) }
            defer { jobs.continuation.finish() }
            try await self.processLoop()
        }
    }

    /// A snapshot to encode and save in the background: the state captured at `metadata.index`.
    struct SnapshotJob: Sendable {
        let metadata: SnapshotMetadata
        let encode: @Sendable () -> [UInt8]
    }

    /// Encodes and saves the snapshots the driver asks for, one at a time, off the actor while Raft goes on.
    private nonisolated func snapshotLoop(_ jobs: AsyncStream<SnapshotJob>) async {
        for await job in jobs {
            let snapshot = Snapshot(metadata: job.metadata, data: job.encode())
            do {
                try await disk.saveSnapshot(snapshot)
                await snapshotSaved(snapshot)
            } catch {
                await snapshotFailed(error)
            }
        }
    }

    private func snapshotFailed(_ error: any Error) {
        logger.critical("Raft member stops: its snapshot could not be saved", metadata: ["error": "\(error)"])
        stop(error)
        signal()
    }

    private func snapshotSaved(_ snapshot: Snapshot) {
        snapshotInFlight = false
        let applied = snapshot.metadata.index
        let compactThrough = LogIndex(applied.rawValue > configuration.retainedEntries ? applied.rawValue - configuration.retainedEntries : 0)
        node.snapshotTaken(snapshot, compactThrough: compactThrough)
        // A leader's snapshot may have been installed while this one was being written.
        lastSnapshotIndex = max(lastSnapshotIndex, applied)
        logger.info("snapshot taken", metadata: ["raft.index": "\(applied)"])
    }

    private func tickLoop() async throws {
        defer { signal() }
        while !Task.isCancelled {
            try await Task.sleep(for: configuration.tickInterval)
            guard stoppedWith == nil else { return }
            node.tick()
            signal()
        }
    }

    private func processLoop() async throws {
        defer { stop(RaftDriverError.stopped) }
        while !Task.isCancelled {
            // The tick loop signals at every tick and once more when it ends (cancellation), so this wait
            // always ends.
            await withCheckedContinuation { continuation in
                if workPending {
                    workPending = false
                    continuation.resume()
                } else {
                    wakeup = continuation
                }
            }
            if let stoppedWith { throw stoppedWith }
            do {
                try await processReady()
            } catch {
                logger.critical("Raft member stops", metadata: ["error": "\(error)"])
                stop(error)
                throw error
            }
        }
    }

    private func signal() {
        if let wakeup {
            self.wakeup = nil
            wakeup.resume()
        } else {
            workPending = true
        }
    }

    /// Send early, persist, send, apply, advance — until the node has nothing more. While the write is in
    /// flight the actor takes other calls (messages, proposals, reads); they step the node, and the next
    /// Ready carries what they produced, so one fsync covers many of them.
    private func processReady() async throws {
        while node.hasReady {
            let ready = node.ready()
            if !ready.earlyMessages.isEmpty { transport.send(ready.earlyMessages) }
            if ready.snapshot != nil || !ready.entries.isEmpty || ready.hardState != nil {
                try await disk.persist(snapshot: ready.snapshot, entries: ready.entries, hardState: ready.hardState)
            }
            if let snapshot = ready.snapshot {
                try application.restore(snapshot)
                lastSnapshotIndex = snapshot.metadata.index
            }
            if !ready.messages.isEmpty { transport.send(ready.messages) }
            for entry in ready.committedEntries { try applyEntry(entry) }
            for read in ready.readStates {
                reads.removeValue(forKey: read.context)?.resume(returning: read.index)
            }
            node.advance(ready)
            wakeReaders()
            snapshotIfDue()
        }
        recordMetrics()
        // A member that stopped leading forgot the reads it had not confirmed: they fail, naming the new leader
        // when there is one, rather than wait for ever.
        if node.role != .leader, !reads.isEmpty {
            let waiting = reads
            reads = [:]
            for (_, read) in waiting { read.resume(throwing: RaftDriverError.notLeader(leader: node.leader)) }
        }
    }

    private func applyEntry(_ entry: LogEntry) throws {
        let waiting = proposals.removeValue(forKey: entry.index)
        switch entry.payload {
        case .command(let command):
            let result = try application.apply(index: entry.index, command: command)
            if let waiting {
                if waiting.term == entry.term {
                    waiting.continuation.resume(returning: result)
                } else {
                    waiting.continuation.resume(throwing: RaftDriverError.dropped)
                }
            }
        case .empty, .configuration:
            application.skip(index: entry.index)
            if let waiting {
                waiting.term == entry.term
                    ? waiting.continuation.resume(returning: [])
                    : waiting.continuation.resume(throwing: RaftDriverError.dropped)
            }
        }
    }

    private func recordMetrics() {
        metrics.update(
            term: node.term, role: node.role, commitIndex: node.commitIndex, appliedIndex: node.appliedIndex,
            lastIndex: node.lastIndex)
    }

    private func wakeReaders() {
        let applied = node.appliedIndex
        readsAwaitingApply.removeAll { read in
            guard read.index <= applied else { return false }
            read.continuation.resume()
            return true
        }
    }

    /// Past the threshold, hands the state as of now to the snapshot loop (one snapshot at a time).
    private func snapshotIfDue() {
        let applied = node.appliedIndex
        guard !snapshotInFlight, let jobs = snapshotJobs,
              applied.rawValue >= lastSnapshotIndex.rawValue + configuration.snapshotThreshold,
              let term = node.entry(at: applied)?.term else { return }
        snapshotInFlight = true
        jobs.yield(SnapshotJob(
            metadata: SnapshotMetadata(index: applied, term: term, configuration: node.configuration),
            encode: application.snapshotEncoder()))
    }

    private func stop(_ error: any Error) {
        guard stoppedWith == nil else { return }
        stoppedWith = error
        for (_, waiting) in proposals { waiting.continuation.resume(throwing: RaftDriverError.stopped) }
        proposals = [:]
        for (_, read) in reads { read.resume(throwing: RaftDriverError.stopped) }
        reads = [:]
        for read in readsAwaitingApply { read.continuation.resume(throwing: RaftDriverError.stopped) }
        readsAwaitingApply = []
    }

    // MARK: - Inputs

    /// A message from another member.
    public func receive(_ message: RaftMessage) {
        guard stoppedWith == nil else { return }
        node.step(message)
        signal()
    }

    /// The transport lost its last connection from `peer`; if that was the leader, an election starts soon
    /// instead of after a whole election timeout (see `RaftNode.peerUnreachable`).
    public func peerUnreachable(_ peer: NodeID) {
        guard stoppedWith == nil else { return }
        node.peerUnreachable(peer)
        signal()
    }

    /// Proposes a command and returns the application's result once it is committed and applied here.
    public func propose(_ command: [UInt8]) async throws -> [UInt8] {
        if stoppedWith != nil { throw RaftDriverError.stopped }
        let (index, term): (LogIndex, Term)
        do {
            (index, term) = try node.propose(command)
        } catch {
            throw Self.translate(error)
        }
        signal()
        return try await withCheckedThrowingContinuation { continuation in
            proposals[index] = (term, continuation)
        }
    }

    /// Waits until this member has applied everything committed before the call (linearizable read).
    /// Only the leader can answer; followers get `.notLeader`.
    public func linearizableRead() async throws {
        if stoppedWith != nil { throw RaftDriverError.stopped }
        let context = nextReadContext
        nextReadContext += 1
        do {
            try node.readIndex(context: context)
        } catch {
            throw Self.translate(error)
        }
        signal()
        let index = try await withCheckedThrowingContinuation { continuation in
            reads[context] = continuation
        }
        if node.appliedIndex >= index { return }
        try await withCheckedThrowingContinuation { continuation in
            readsAwaitingApply.append((index, continuation))
        }
    }

    public func proposeConfigurationChange(_ change: ConfigurationChange) async throws {
        let (index, term): (LogIndex, Term)
        do {
            (index, term) = try node.proposeConfigurationChange(change)
        } catch {
            throw Self.translate(error)
        }
        signal()
        _ = try await withCheckedThrowingContinuation { continuation in
            proposals[index] = (term, continuation)
        }
    }

    public func transferLeadership(to target: NodeID) throws {
        do {
            try node.transferLeadership(to: target)
        } catch {
            throw Self.translate(error)
        }
        signal()
    }

    public var status: RaftStatus {
        RaftStatus(
            id: id, role: node.role, term: node.term, leader: node.leader, commitIndex: node.commitIndex,
            appliedIndex: node.appliedIndex, lastIndex: node.lastIndex, configuration: node.configuration,
            matchIndexes: node.matchIndexes)
    }

    static func translate(_ error: any Error) -> RaftDriverError {
        switch error as? RaftProposalError {
        case .notLeader(let leader): .notLeader(leader: leader)
        case .transferInProgress: .rejected("a leadership transfer is in progress; retry shortly")
        case .configurationChangeInProgress: .rejected("another membership change is in progress; retry once it completes")
        case .invalidConfigurationChange(let why): .rejected(why)
        case nil: .rejected("\(error)")
        }
    }
}
