/// The one error type the ClusterStore module throws.
///
/// `code` is for programs (match on it); `message` is for people: it names the thing at fault and what to do.
/// A thrown `StoreError` from ``ClusterState/apply(index:command:)`` or ``ClusterState/skip(index:)`` means the
/// entry was **not** applied: the state and its applied index are unchanged, and the runtime must stop applying
/// (skipping the entry would make this controller diverge from the others).
public struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. A struct rather than an enum so that codes can be added without breaking
    /// callers that switch over them.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        private init(_ name: String) { self.name = name }

        public var description: String { name }

        /// A log entry carries a command, or a field of one, that this version does not know: it was proposed by
        /// a newer Flotilla. The controller must be upgraded before it can apply it.
        public static let newerCommand = Code("newerCommand")
        /// A log entry's bytes are not a `ClusterCommand` at all.
        public static let undecodableCommand = Code("undecodableCommand")
        /// A log entry is a `ClusterCommand` with no command in it (and nothing unknown either).
        public static let emptyCommand = Code("emptyCommand")
        /// An entry was offered out of log order (entries apply one by one: applied index + 1, then the next).
        public static let outOfOrder = Code("outOfOrder")
        /// A key, value, id or address breaks a rule of the store. Returned by the validation helpers, so the
        /// API layer can refuse a request before proposing it; `apply` reports the same as ``ApplyResult/invalid(_:)``.
        public static let invalidArgument = Code("invalidArgument")
        /// A snapshot is of a format this version does not know, or carries fields it does not know.
        public static let newerSnapshot = Code("newerSnapshot")
        /// A snapshot's bytes are not a `ClusterSnapshot`, or it contradicts itself (a key twice, an index
        /// beyond its applied index).
        public static let invalidSnapshot = Code("invalidSnapshot")
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence a person can act on.
    public var message: String

    /// Creates an error; `message` should name the thing at fault and, where possible, the remedy.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
