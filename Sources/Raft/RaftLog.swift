/// The replicated log as one member holds it: a snapshot point, the entries after it, and how far they are
/// persisted, committed and applied. Invariant: snapshotIndex ≤ applied ≤ committed, and applied ≤ persisted
/// (only durable entries are applied).
struct RaftLog: Sendable {
    private(set) var snapshotIndex: LogIndex
    private(set) var snapshotTerm: Term
    /// Entries with indices snapshotIndex+1 … lastIndex.
    private(set) var entries: [LogEntry]
    var committed: LogIndex
    var applied: LogIndex
    /// The highest index known to be durable on this member.
    var persisted: LogIndex
    /// Entries from this index on have not been handed out for persistence yet.
    private(set) var unstableFrom: LogIndex

    init(snapshot: SnapshotMetadata?, entries: [LogEntry], committed: LogIndex) {
        snapshotIndex = snapshot?.index ?? 0
        snapshotTerm = snapshot?.term ?? 0
        self.entries = entries
        let last = entries.last?.index ?? snapshotIndex
        self.committed = min(max(committed, snapshotIndex), last)
        applied = snapshotIndex
        persisted = last
        unstableFrom = last.next
    }

    var firstIndex: LogIndex { snapshotIndex.next }
    var lastIndex: LogIndex { entries.last?.index ?? snapshotIndex }
    var lastTerm: Term { entries.last?.term ?? snapshotTerm }

    /// The term of the entry at `index`; nil when compacted away or beyond the end.
    func term(at index: LogIndex) -> Term? {
        if index == snapshotIndex { return snapshotTerm }
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[offset(index)].term
    }

    func entry(at index: LogIndex) -> LogEntry? {
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[offset(index)]
    }

    func matches(index: LogIndex, term: Term) -> Bool {
        self.term(at: index) == term
    }

    /// Raft §5.4.1: a candidate's log is at least as up to date as ours.
    func isUpToDate(lastIndex candidateIndex: LogIndex, lastTerm candidateTerm: Term) -> Bool {
        candidateTerm > lastTerm || (candidateTerm == lastTerm && candidateIndex >= lastIndex)
    }

    /// Entries from `index` on, at most `maxBytes` (always at least one entry if any exist).
    func entries(from index: LogIndex, maxBytes: Int) -> [LogEntry] {
        guard index > snapshotIndex, index <= lastIndex else { return [] }
        var result: [LogEntry] = []
        var bytes = 0
        for entry in entries[offset(index)...] {
            bytes += entry.byteSize
            if !result.isEmpty && bytes > maxBytes { break }
            result.append(entry)
        }
        return result
    }

    /// Appends entries a leader sent after a matching (prevIndex, prevTerm). Only a conflicting entry (same
    /// index, different term) truncates the log: entries that match are kept, so a stale or reordered append
    /// never removes entries a newer one added (§5.3). Returns false when the append would rewrite committed
    /// entries, which a correct leader never asks for.
    mutating func appendFromLeader(_ incoming: [LogEntry]) -> Bool {
        for (position, entry) in incoming.enumerated() {
            if entry.index <= snapshotIndex { continue }
            if let existing = term(at: entry.index) {
                if existing == entry.term { continue }
                guard entry.index > committed else { return false }
                truncate(from: entry.index)
            }
            entries.append(contentsOf: incoming[position...].filter { $0.index > snapshotIndex })
            return true
        }
        return true
    }

    /// The leader appends its own new entry.
    mutating func appendAsLeader(term: Term, payload: EntryPayload) -> LogEntry {
        let entry = LogEntry(term: term, index: lastIndex.next, payload: payload)
        entries.append(entry)
        return entry
    }

    private mutating func truncate(from index: LogIndex) {
        entries.removeSubrange(offset(index)...)
        persisted = min(persisted, index.previous)
        unstableFrom = min(unstableFrom, index)
    }

    /// Entries to hand out for persistence, and marks them handed out.
    mutating func takeUnstable() -> [LogEntry] {
        guard unstableFrom <= lastIndex else { return [] }
        let from = max(unstableFrom, firstIndex)
        let result = Array(entries[offset(from)...])
        unstableFrom = lastIndex.next
        return result
    }

    /// The runtime reports entries up to `index` (with `term`) durable.
    mutating func persisted(through index: LogIndex, term: Term) {
        // A truncation may have replaced the entry since it was handed out; then it is not persisted.
        guard matches(index: index, term: term), index > persisted else { return }
        persisted = index
    }

    /// Entries committed and durable but not yet applied.
    func applicable() -> [LogEntry] {
        let upTo = min(committed, persisted)
        guard upTo > applied else { return [] }
        return Array(entries[offset(applied.next)...offset(upTo)])
    }

    /// Replaces the whole log with a snapshot's point (a follower installing a leader's snapshot). Callers
    /// only install a snapshot the log does not already agree with, so no entry survives it.
    mutating func restore(_ metadata: SnapshotMetadata) {
        entries = []
        snapshotIndex = metadata.index
        snapshotTerm = metadata.term
        committed = metadata.index
        applied = metadata.index
        persisted = metadata.index
        unstableFrom = metadata.index.next
    }

    /// Drops entries up to `index` (already in a local snapshot).
    mutating func compact(through index: LogIndex) {
        guard index > snapshotIndex, index <= applied, let term = term(at: index) else { return }
        entries.removeSubrange(..<offset(index.next))
        snapshotIndex = index
        snapshotTerm = term
    }

    private func offset(_ index: LogIndex) -> Int {
        Int(index.rawValue - snapshotIndex.rawValue - 1)
    }
}
