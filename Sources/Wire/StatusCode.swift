/// How a call ended. The values and meanings are gRPC's, so clients in other languages map them directly,
/// plus `notLeader` (100), which carries the current leader's address.
public struct StatusCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let ok = StatusCode(rawValue: 0)
    /// The caller cancelled the call.
    public static let cancelled = StatusCode(rawValue: 1)
    public static let unknown = StatusCode(rawValue: 2)
    /// The request is malformed or names something invalid; retrying it unchanged will fail again.
    public static let invalidArgument = StatusCode(rawValue: 3)
    /// The call's deadline passed before it completed.
    public static let deadlineExceeded = StatusCode(rawValue: 4)
    public static let notFound = StatusCode(rawValue: 5)
    public static let alreadyExists = StatusCode(rawValue: 6)
    /// The caller's role may not call this method.
    public static let permissionDenied = StatusCode(rawValue: 7)
    /// A limit was hit: message size, streams, memory.
    public static let resourceExhausted = StatusCode(rawValue: 8)
    /// The system is not in a state the call needs (e.g. a compare-and-set index that no longer matches).
    public static let failedPrecondition = StatusCode(rawValue: 9)
    public static let aborted = StatusCode(rawValue: 10)
    public static let outOfRange = StatusCode(rawValue: 11)
    /// The server has no such method.
    public static let unimplemented = StatusCode(rawValue: 12)
    /// A bug or an invariant broken on the server.
    public static let internalError = StatusCode(rawValue: 13)
    /// The connection or the server is not usable now; retrying (perhaps elsewhere) may succeed.
    public static let unavailable = StatusCode(rawValue: 14)
    public static let dataLoss = StatusCode(rawValue: 15)
    /// The caller has no valid identity.
    public static let unauthenticated = StatusCode(rawValue: 16)
    /// This controller is not the Raft leader; the status's leader address says where to go.
    public static let notLeader = StatusCode(rawValue: 100)

    public var description: String {
        switch rawValue {
        case 0: "OK"
        case 1: "CANCELLED"
        case 2: "UNKNOWN"
        case 3: "INVALID_ARGUMENT"
        case 4: "DEADLINE_EXCEEDED"
        case 5: "NOT_FOUND"
        case 6: "ALREADY_EXISTS"
        case 7: "PERMISSION_DENIED"
        case 8: "RESOURCE_EXHAUSTED"
        case 9: "FAILED_PRECONDITION"
        case 10: "ABORTED"
        case 11: "OUT_OF_RANGE"
        case 12: "UNIMPLEMENTED"
        case 13: "INTERNAL"
        case 14: "UNAVAILABLE"
        case 15: "DATA_LOSS"
        case 16: "UNAUTHENTICATED"
        case 100: "NOT_LEADER"
        default: "CODE_\(rawValue)"
        }
    }
}

/// A call that ended with a status other than OK. The message is written for a person: what went wrong and
/// what to do.
public struct RPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: StatusCode
    public var message: String
    /// With `.notLeader`: where the leader is, if the server knew.
    public var leaderAddress: String?

    public init(_ code: StatusCode, _ message: String, leaderAddress: String? = nil) {
        self.code = code
        self.message = message
        self.leaderAddress = leaderAddress
    }

    public var description: String {
        if let leaderAddress { return "\(code): \(message) (leader: \(leaderAddress))" }
        return "\(code): \(message)"
    }
}
