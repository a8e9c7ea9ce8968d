/// What applying one committed command did. Every outcome stands for an entry that was applied: the applied
/// index moved to `index`, whether or not the command changed anything (a failed check-and-set is a decision
/// too, and every controller makes the same one).
public struct ApplyOutcome: Sendable, Hashable {
    /// The log index of the entry.
    public var index: UInt64
    /// The proposer's correlation id from the command (0 when nobody waits).
    public var requestID: UInt64
    /// What the command decided.
    public var result: ApplyResult
    /// The rows it changed, in order; empty unless `result` is `.ok` (and empty for an upsert that leaves a
    /// record as it was).
    public var changes: [StoreChange]

    public init(index: UInt64, requestID: UInt64, result: ApplyResult, changes: [StoreChange]) {
        self.index = index
        self.requestID = requestID
        self.result = result
        self.changes = changes
    }
}

/// The decision a command came to.
public enum ApplyResult: Sendable, Hashable {
    /// Done. `index` is the entry's index: a variable's new modify index, or the index of a delete.
    case ok(index: UInt64)
    /// A check-and-set did not match: nothing changed. `currentIndex` is the row's modify index now, 0 when
    /// it does not exist.
    case casFailed(currentIndex: UInt64)
    /// The row to delete does not exist: nothing changed.
    case notFound
    /// The command broke a rule of the store (a key too long, a value too large): nothing changed.
    /// The message names the key and the rule.
    case invalid(String)
}
