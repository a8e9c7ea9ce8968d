public import ClusterModel

/// A Raft term: a logical clock that increases with every election (Raft §5.1).
public struct Term: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt64) { self.rawValue = value }
    public static func < (lhs: Term, rhs: Term) -> Bool { lhs.rawValue < rhs.rawValue }
    public var next: Term { Term(rawValue + 1) }
    public var description: String { "\(rawValue)" }
}

/// A position in the replicated log, 1-based; 0 means "before the first entry".
public struct LogIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral, Strideable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt64) { self.rawValue = value }
    public static func < (lhs: LogIndex, rhs: LogIndex) -> Bool { lhs.rawValue < rhs.rawValue }
    public func distance(to other: LogIndex) -> Int64 { Int64(other.rawValue) - Int64(rawValue) }
    public func advanced(by n: Int64) -> LogIndex { LogIndex(UInt64(Int64(rawValue) + n)) }
    public var next: LogIndex { LogIndex(rawValue + 1) }
    public var previous: LogIndex { LogIndex(rawValue == 0 ? 0 : rawValue - 1) }
    public var description: String { "\(rawValue)" }
}

/// The voters and learners of the cluster. Learners receive the log but neither vote nor count for commit.
public struct RaftConfiguration: Hashable, Sendable, CustomStringConvertible {
    public var voters: Set<NodeID>
    public var learners: Set<NodeID>

    public init(voters: Set<NodeID>, learners: Set<NodeID> = []) {
        self.voters = voters
        self.learners = learners
    }

    public var members: Set<NodeID> { voters.union(learners) }
    /// Votes needed for a majority of voters.
    public var quorum: Int { voters.count / 2 + 1 }

    public var description: String {
        "voters \(voters.map(\.rawValue).sorted()) learners \(learners.map(\.rawValue).sorted())"
    }
}

/// A change of membership, one server at a time (Raft dissertation §4.1): the learner step lets a new server
/// catch up before it can affect quorums.
public enum ConfigurationChange: Hashable, Sendable {
    case addLearner(NodeID)
    case promote(NodeID)
    case remove(NodeID)

    public func applied(to configuration: RaftConfiguration) -> RaftConfiguration {
        var result = configuration
        switch self {
        case .addLearner(let id):
            if !result.voters.contains(id) { result.learners.insert(id) }
        case .promote(let id):
            result.learners.remove(id)
            result.voters.insert(id)
        case .remove(let id):
            result.voters.remove(id)
            result.learners.remove(id)
        }
        return result
    }
}

/// What an entry carries.
public enum EntryPayload: Hashable, Sendable {
    /// The empty entry a new leader appends to commit an entry of its own term (§5.4.2, §8).
    case empty
    /// A state-machine command, opaque to Raft.
    case command([UInt8])
    /// A membership change; it takes effect when appended (dissertation §4.1).
    case configuration(ConfigurationChange)
}

/// One entry of the replicated log.
public struct LogEntry: Hashable, Sendable {
    public var term: Term
    public var index: LogIndex
    public var payload: EntryPayload

    public init(term: Term, index: LogIndex, payload: EntryPayload) {
        self.term = term
        self.index = index
        self.payload = payload
    }

    /// Approximate size for batching limits.
    var byteSize: Int {
        switch payload {
        case .empty: 16
        case .command(let bytes): 16 + bytes.count
        case .configuration: 32
        }
    }
}

/// Term and vote, persisted together before any vote is granted or message sent (§5.2, Figure 2), and the
/// commit index (persisted only as an optimization for restarts).
public struct HardState: Hashable, Sendable {
    public var term: Term
    public var votedFor: NodeID?
    public var commit: LogIndex

    public init(term: Term = 0, votedFor: NodeID? = nil, commit: LogIndex = 0) {
        self.term = term
        self.votedFor = votedFor
        self.commit = commit
    }
}

/// Where a snapshot ends: the last index and term it covers and the configuration at that point.
public struct SnapshotMetadata: Hashable, Sendable {
    public var index: LogIndex
    public var term: Term
    public var configuration: RaftConfiguration

    public init(index: LogIndex, term: Term, configuration: RaftConfiguration) {
        self.index = index
        self.term = term
        self.configuration = configuration
    }
}

/// A state-machine snapshot: its metadata and the opaque bytes of the state.
public struct Snapshot: Hashable, Sendable {
    public var metadata: SnapshotMetadata
    public var data: [UInt8]

    public init(metadata: SnapshotMetadata, data: [UInt8]) {
        self.metadata = metadata
        self.data = data
    }
}
