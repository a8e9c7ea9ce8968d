import Foundation

/// Runs blocking work (a blocking socket client) on a thread of its own and awaits its result, so the test
/// does not hold one of the few cooperative-pool threads that the server under test needs to answer it.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}
