import DequeModule
import NIOCore
import Synchronization
import Wire

/// Messages received on one stream, waiting for the task that handles the call.
///
/// The event loop delivers; one task consumes. Bounded by flow control: the peer cannot send more than the
/// stream window ahead of what the consumer has taken, and taking messages is what returns window.
final class StreamInbox: Sendable {
    /// How a stream's inbound side ended.
    enum End: Sendable {
        /// Clean: the client half-closed (server side) or the call ended with OK (client side).
        case finished
        /// The call failed, was cancelled, or the connection died.
        case failed(RPCError)
    }

    private struct State {
        var messages = Deque<(message: ByteBuffer, wireSize: Int)>()
        var end: End?
        var waiter: CheckedContinuation<ByteBuffer?, any Error>?
        var consumerCancelled = false
        var unreportedBytes = 0
    }

    private let state = Mutex(State())
    /// Consumed bytes are reported back (as window credit) in chunks of at least this size.
    private let reportThreshold: Int
    private let report: @Sendable (Int) -> Void

    init(reportThreshold: Int, report: @escaping @Sendable (Int) -> Void) {
        self.reportThreshold = reportThreshold
        self.report = report
    }

    // MARK: - Producer (event loop)

    func deliver(_ message: ByteBuffer, wireSize: Int) {
        let waiter: CheckedContinuation<ByteBuffer?, any Error>? = state.withLock { state in
            guard state.end == nil else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                state.unreportedBytes += wireSize
                return waiter
            }
            state.messages.append((message, wireSize))
            return nil
        }
        if let waiter {
            waiter.resume(returning: message)
            reportIfDue()
        }
    }

    /// Ends the inbound side. Messages already delivered are still handed out before the end is reported;
    /// a failure is reported at once only to a consumer that is already waiting.
    func finish(_ end: End) {
        let waiter: CheckedContinuation<ByteBuffer?, any Error>? = state.withLock { state in
            guard state.end == nil else { return nil }
            state.end = end
            if case .failed = end {
                // A failed call's unread messages are useless; drop them so a cancelled stream frees memory.
                state.messages.removeAll()
            }
            defer { state.waiter = nil }
            return state.waiter
        }
        guard let waiter else { return }
        switch end {
        case .finished: waiter.resume(returning: nil)
        case .failed(let error): waiter.resume(throwing: error)
        }
    }

    var isFinished: Bool { state.withLock { $0.end != nil } }

    // MARK: - Consumer (one task)

    /// The next message, nil at a clean end; throws the call's error or `CancellationError`.
    func next() async throws -> ByteBuffer? {
        // Fast path: a message or the end is already here.
        enum Immediate { case message(ByteBuffer), end(End), wait }
        let immediate: Immediate = state.withLock { state in
            if let first = state.messages.popFirst() {
                state.unreportedBytes += first.wireSize
                return .message(first.message)
            }
            if let end = state.end { return .end(end) }
            return .wait
        }
        switch immediate {
        case .message(let message):
            reportIfDue()
            return message
        case .end(.finished):
            return nil
        case .end(.failed(let error)):
            throw error
        case .wait:
            break
        }
        try Task.checkCancellation()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let resumeNow: Result<ByteBuffer?, any Error>? = state.withLock { state in
                    if state.consumerCancelled { return .failure(CancellationError()) }
                    if let first = state.messages.popFirst() {
                        state.unreportedBytes += first.wireSize
                        return .success(first.message)
                    }
                    switch state.end {
                    case .finished: return .success(nil)
                    case .failed(let error): return .failure(error)
                    case nil:
                        state.waiter = continuation
                        return nil
                    }
                }
                if let resumeNow { continuation.resume(with: resumeNow) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                state.consumerCancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Credit goes back in chunks of `reportThreshold` (few event-loop hops), and also whenever the consumer
    /// has drained everything (at least `drainReportMinimum` bytes), so window is only ever held by messages
    /// really waiting unread: many quiet streams with small unreported remainders can never add up to the
    /// whole connection window and stall it.
    private func reportIfDue() {
        let due: Int = state.withLock { state in
            // Also after the sender half-closed: a long-running call must not hold its request's credit.
            let drained = state.messages.isEmpty
            guard state.unreportedBytes >= reportThreshold
                || (drained && state.unreportedBytes >= Self.drainReportMinimum) else { return 0 }
            defer { state.unreportedBytes = 0 }
            return state.unreportedBytes
        }
        if due > 0 { report(due) }
    }

    /// With at most 1,024 streams, remainders under this hold at most 1 MiB of an 8 MiB connection window.
    static let drainReportMinimum = 1024
}

/// Signals the end of a server-side call to the task supervising its handler: either the handler finished,
/// or the call was cancelled (CANCEL frame, deadline, connection lost) and the handler must be cancelled.
final class CallLifecycle: Sendable {
    enum Outcome: Sendable { case handlerFinished, cancelled }
    private struct State {
        var outcome: Outcome?
        var waiter: CheckedContinuation<Outcome, Never>?
    }
    private let state = Mutex(State())

    init() {}

    func complete(_ outcome: Outcome) {
        let waiter = state.withLock { state -> CheckedContinuation<Outcome, Never>? in
            guard state.outcome == nil else { return nil }
            state.outcome = outcome
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: outcome)
    }

    var isCancelled: Bool { state.withLock { $0.outcome == .cancelled } }

    func wait() async -> Outcome {
        await withCheckedContinuation { continuation in
            let outcome = state.withLock { state -> Outcome? in
                if let outcome = state.outcome { return outcome }
                state.waiter = continuation
                return nil
            }
            if let outcome { continuation.resume(returning: outcome) }
        }
    }
}
