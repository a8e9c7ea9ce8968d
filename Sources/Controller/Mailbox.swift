import DequeModule
import Synchronization

/// A bounded queue with one reader, for fanning events out to watchers without ever blocking the publisher:
/// when the reader falls `limit` items behind, the whole backlog is replaced by what `overflow` makes of it
/// (a "read everything again" marker), so the reader catches up instead of acting on a partial history.
final class Mailbox<Element: Sendable>: Sendable {
    private struct State {
        var queue: Deque<Element> = []
        var waiter: CheckedContinuation<Element?, Never>?
        var closed = false
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// Queues `element`, or hands it straight to a waiting reader. On overflow the backlog becomes
    /// `overflow()`. Returns false when the mailbox is closed.
    @discardableResult
    func push(_ element: Element, overflow: () -> Element) -> Bool {
        let (waiter, accepted): (CheckedContinuation<Element?, Never>?, Bool) = state.withLock { state in
            guard !state.closed else { return (nil, false) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (waiter, true)
            }
            if state.queue.count >= limit {
                state.queue = [overflow()]
            } else {
                state.queue.append(element)
            }
            return (nil, true)
        }
        waiter?.resume(returning: element)
        return accepted
    }

    /// Replaces whatever is queued with `element` (a resynchronisation makes the backlog moot).
    func replaceAll(with element: Element) {
        let waiter: CheckedContinuation<Element?, Never>? = state.withLock { state in
            guard !state.closed else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.queue = [element]
            return nil
        }
        waiter?.resume(returning: element)
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Items queued and not yet read (tests, metrics).
    var backlog: Int { state.withLock { $0.queue.count } }

    /// Ends the mailbox: the reader gets nil once, now or at its next read.
    func close() {
        let waiter = state.withLock { state -> CheckedContinuation<Element?, Never>? in
            state.closed = true
            state.queue = []
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// The next item; nil once closed or when the calling task is cancelled.
    func next() async -> Element? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
                let immediate: Element?? = state.withLock { state in
                    if let element = state.queue.popFirst() { return .some(element) }
                    guard !state.closed else { return .some(nil) }
                    state.waiter = continuation
                    return .none
                }
                if case .some(let element) = immediate { continuation.resume(returning: element) }
            }
        } onCancel: {
            close()
        }
    }
}
