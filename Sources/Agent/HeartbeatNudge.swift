import Synchronization

/// The services this node's load balancer holds connections for (they scaled to zero): the session names them
/// on every heartbeat while connections wait (`AgentHeartbeat.wake_service_ids`), and heartbeats at once when
/// the first one is held, so the leader starts a replica without waiting for the next period.
public protocol WakeSource: Sendable {
    /// Ids of the services holding connections now.
    func wakingServices() async -> [String]
    /// `handler` is called, quickly and from any thread, whenever a service starts holding connections.
    func onWake(_ handler: @escaping @Sendable () -> Void)
}

/// Lets the heartbeat loop's wait between heartbeats end early: a nudge ends the wait in progress, or the next
/// one if none is in progress (nudges in between count as one).
final class HeartbeatNudge: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// Ends the current (or next) wait.
    func nudge() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns after `duration` or at a nudge, whichever is first; throws when cancelled. One waiter at a time.
    func wait(for duration: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await Task.sleep(for: duration) }
            group.addTask { await self.nextNudge() }
            defer { group.cancelAll() }
            try await group.next()
        }
        try Task.checkCancellation()
    }

    private func nextNudge() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Cancelled before the waiter is stored: the handler found none to resume, so return here.
                let now = state.withLock { state -> Bool in
                    if state.pending || Task.isCancelled {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
