/// One row that an applied command changed: what the shell turns into the watch stream the leader's control
/// loops read. Every outcome lists its changes in the order they happened.
public struct StoreChange: Sendable, Hashable, CustomStringConvertible {
    /// The tables of the store.
    ///
    public enum Table: String, Sendable, Hashable, CaseIterable {
        /// Variables, by key.
        case variables
        /// The controllers' address book, by node id.
        case controllers
        /// Nodes that run agents, by node id.
        case nodes
        /// Join tokens, by token id.
        case tokens
        /// Revoked node ids.
        case revokedNodes
        /// The cluster CA (one row, key "ca").
        case ca
        /// Services, by id.
        case services
        /// Tasks, by id.
        case tasks
        /// The event history, by event id in decimal: a put for each new event, a delete for each dropped one.
        case events
    }

    /// Whether the row now exists.
    public enum Kind: String, Sendable, Hashable {
        /// The row was created or replaced; read it from the state for its new content.
        case put
        /// The row was removed.
        case delete
    }

    /// Which table.
    public var table: Table
    /// The row's key in its table (a variable's key, a controller's node id).
    public var key: String
    /// Put or delete.
    public var kind: Kind
    /// The log index of the command that made the change.
    public var index: UInt64

    public init(table: Table, key: String, kind: Kind, index: UInt64) {
        self.table = table
        self.key = key
        self.kind = kind
        self.index = index
    }

    public var description: String { "\(kind.rawValue) \(table.rawValue)/\(key) at \(index)" }
}
