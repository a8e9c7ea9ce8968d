@testable import LoadBalancer
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// The relay loop as the NIO event loop it also is: work handed in from other threads runs on its thread, in
/// order; timers fire at their deadline unless cancelled; shutting down stops the thread.
@Suite struct RelayLoopTests {
    @Test func workHandedInRunsOnTheLoopInOrder() async throws {
        let group = try RelayLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let seen = NIOLockedValueBox<[Int]>([])
        for number in 0..<100 {
            loop.execute {
                precondition(loop.inEventLoop)
                seen.withLockedValue { $0.append(number) }
            }
        }
        let onLoop = try await loop.submit { loop.inEventLoop }.get()
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        #expect(seen.withLockedValue { $0 } == Array(0..<100))
        try await group.shutdownGracefully()
    }

    @Test func aTimerFiresAfterItsDeadlineAndACancelledOneNever() async throws {
        let group = try RelayLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let start = NIODeadline.now()
        let fired = loop.scheduleTask(in: .milliseconds(50)) { NIODeadline.now() }
        let cancelled = loop.scheduleTask(in: .milliseconds(20)) { NIODeadline.now() }
        cancelled.cancel()
        let at = try await fired.futureResult.get()
        #expect(at - start >= .milliseconds(50))
        await #expect(throws: EventLoopError.self) { try await cancelled.futureResult.get() }
        try await group.shutdownGracefully()
    }

    @Test func everyThreadOfAGroupIsItsOwnLoop() async throws {
        let group = try RelayLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        #expect(loops.count == 2)
        let first = loops[0], second = loops[1]
        let crossed = try await first.submit { second.inEventLoop }.get()
        #expect(!crossed)
        try await group.shutdownGracefully()
    }
}
