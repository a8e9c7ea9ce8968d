public import ClusterModel

/// One message between Raft members. Every message carries the sender's term (§5.1).
public struct RaftMessage: Hashable, Sendable, CustomStringConvertible {
    public var from: NodeID
    public var to: NodeID
    public var term: Term
    public var kind: Kind

    public init(from: NodeID, to: NodeID, term: Term, kind: Kind) {
        self.from = from
        self.to = to
        self.term = term
        self.kind = kind
    }

    public enum Kind: Hashable, Sendable {
        /// Leader → follower: entries after (prevIndex, prevTerm), and the leader's commit index (§5.3).
        case append(prevIndex: LogIndex, prevTerm: Term, entries: [LogEntry], commit: LogIndex)
        /// Follower → leader. Accepted: `index` is the follower's new match. Rejected: `index` is the
        /// prevIndex refused and `hint` the follower's last index, so the leader skips back at once.
        case appendResponse(accepted: Bool, index: LogIndex, hint: LogIndex)
        /// Leader → follower: keep-alive carrying the commit index the follower may safely adopt, and an
        /// optional read context (ReadIndex, §6.4).
        case heartbeat(commit: LogIndex, readContext: UInt64?)
        case heartbeatResponse(readContext: UInt64?)
        /// (Pre-)candidate → all: ask for a vote for `term` (a pre-vote asks for term+1 without taking it).
        /// `transfer` marks a campaign started by leadership transfer, which ignores leader leases.
        case requestVote(lastIndex: LogIndex, lastTerm: Term, preVote: Bool, transfer: Bool)
        case voteResponse(granted: Bool, preVote: Bool)
        /// Leader → follower: one chunk of a snapshot (dissertation §5.3; chunked like InstallSnapshot).
        case installSnapshot(metadata: SnapshotMetadata, offset: Int, chunk: [UInt8], done: Bool)
        /// Follower → leader: the chunks up to `offset` arrived; `installedIndex` when the snapshot is in place.
        case snapshotResponse(offset: Int, installedIndex: LogIndex?, rejected: Bool)
        /// Leader → transfer target: start an election now (dissertation §3.10).
        case timeoutNow
    }

    public var description: String {
        let body: String
        switch kind {
        case .append(let prevIndex, let prevTerm, let entries, let commit):
            body = "append prev=\(prevIndex)@\(prevTerm) n=\(entries.count) commit=\(commit)"
        case .appendResponse(let accepted, let index, let hint):
            body = accepted ? "append-ok \(index)" : "append-reject \(index) hint=\(hint)"
        case .heartbeat(let commit, let context): body = "heartbeat commit=\(commit) ctx=\(context.map(String.init) ?? "-")"
        case .heartbeatResponse(let context): body = "heartbeat-resp ctx=\(context.map(String.init) ?? "-")"
        case .requestVote(let lastIndex, let lastTerm, let preVote, _):
            body = "\(preVote ? "pre-vote" : "vote") last=\(lastIndex)@\(lastTerm)"
        case .voteResponse(let granted, let preVote): body = "\(preVote ? "pre-vote" : "vote")-\(granted ? "granted" : "rejected")"
        case .installSnapshot(let metadata, let offset, let chunk, let done):
            body = "snapshot \(metadata.index)@\(metadata.term) off=\(offset) len=\(chunk.count)\(done ? " done" : "")"
        case .snapshotResponse(let offset, let installed, let rejected):
            body = "snapshot-resp off=\(offset) installed=\(installed.map { "\($0)" } ?? "-")\(rejected ? " rejected" : "")"
        case .timeoutNow: body = "timeout-now"
        }
        return "\(from)→\(to) t\(term) \(body)"
    }
}

/// The answer to a ReadIndex request: once the state machine has applied `index`, a read issued with
/// `context` sees every write acknowledged before it (linearizable, §6.4).
public struct ReadState: Hashable, Sendable {
    public var context: UInt64
    public var index: LogIndex
}
