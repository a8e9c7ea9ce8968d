@testable import Agent
import Logging
import Messages
import Synchronization
import TestSupport
import Testing
import Transport
import Wire

/// The session against a fake leader (an RPC server that records heartbeats): a service whose connections are
/// held is named on the heartbeats, at once rather than at the next period.
@Suite("Agent session: wake_service_ids")
struct AgentSessionWakeTests {
    /// What the fake leader received.
    final class Received: Sendable {
        private let heartbeats = Mutex<[Flotilla_V1_AgentHeartbeat]>([])
        func append(_ heartbeat: Flotilla_V1_AgentHeartbeat) { heartbeats.withLock { $0.append(heartbeat) } }
        var all: [Flotilla_V1_AgentHeartbeat] { heartbeats.withLock { $0 } }
    }

    /// A load balancer stand-in: the test says which services hold connections and fires the wake.
    final class FakeWakes: WakeSource {
        private let state = Mutex<(waking: [String], handler: (@Sendable () -> Void)?)>(([], nil))
        func wakingServices() async -> [String] { state.withLock { $0.waking } }
        func onWake(_ handler: @escaping @Sendable () -> Void) { state.withLock { $0.handler = handler } }

        /// `services` hold connections now; `notify`: as a port's first held connection does, call the handler.
        func hold(_ services: [String], notify: Bool = true) {
            let handler = state.withLock { state in
                state.waking = services
                return state.handler
            }
            if notify { handler?() }
        }
    }

    /// A fake leader that sets the heartbeat period and records every heartbeat.
    static func leader(periodMs: UInt32, received: Received) -> RPCRouter {
        var router = RPCRouter()
        router.register(Methods.agentSession) { heartbeats, writer, _ in
            var first = Flotilla_V1_SessionUpdate()
            first.heartbeatPeriodMs = periodMs
            try await writer.write(first)
            for try await heartbeat in heartbeats { received.append(heartbeat) }
        }
        return router
    }

    @Test("a held connection makes the next heartbeat carry the service id at once, well before the period")
    func wakeHeartbeat() async throws {
        let pki = try TestPKI()
        let received = Received()
        // A long period: only the wake can bring a heartbeat within the test's wait.
        try await withTestServer(credentials: pki.controller, router: Self.leader(periodMs: 30_000, received: received)) { server in
            let wakes = FakeWakes()
            let session = AgentSession(
                identity: AgentIdentity(pki.agent), controllers: ["127.0.0.1:\(server.localAddress.port!)"], directory: nil,
                wakes: wakes, logger: Logger(label: "agent"))
            let running = Task { try await session.run() }
            defer { running.cancel() }
            let opened = try await eventually { received.all.count == 1 }
            #expect(opened)
            #expect(received.all.first?.wakeServiceIds == [])

            let clock = ContinuousClock()
            let heldAt = clock.now
            wakes.hold(["svc-1"])
            let woken = try await eventually(timeout: .seconds(5)) { received.all.count == 2 }
            #expect(woken)
            #expect(clock.now - heldAt < .seconds(5), "well before the 30 s period")
            #expect(received.all.last?.wakeServiceIds == ["svc-1"])

            // A wake while one is pending counts once; the next heartbeat still names what is held now.
            wakes.hold(["svc-1", "svc-2"])
            let again = try await eventually(timeout: .seconds(5)) { received.all.count == 3 }
            #expect(again)
            #expect(received.all.last?.wakeServiceIds == ["svc-1", "svc-2"])
        }
    }

    @Test("the ids are repeated on every heartbeat while connections wait, and left out once none does")
    func repeatedWhileHeld() async throws {
        let pki = try TestPKI()
        let received = Received()
        try await withTestServer(credentials: pki.controller, router: Self.leader(periodMs: 50, received: received)) { server in
            let wakes = FakeWakes()
            wakes.hold(["svc-1"], notify: false)
            let session = AgentSession(
                identity: AgentIdentity(pki.agent), controllers: ["127.0.0.1:\(server.localAddress.port!)"], directory: nil,
                wakes: wakes, logger: Logger(label: "agent"))
            let running = Task { try await session.run() }
            defer { running.cancel() }
            let several = try await eventually { received.all.count >= 4 }
            #expect(several)
            #expect(received.all.allSatisfy { $0.wakeServiceIds == ["svc-1"] })
            wakes.hold([], notify: false)
            let seen = received.all.count
            let later = try await eventually { received.all.count >= seen + 3 }
            #expect(later)
            #expect(received.all.last?.wakeServiceIds == [], "no connection waits: no id")
        }
    }

    @Test("a nudge ends the wait in progress, or the next one; without one the wait lasts its time")
    func nudge() async throws {
        let nudge = HeartbeatNudge()
        let clock = ContinuousClock()
        var started = clock.now
        try await nudge.wait(for: .milliseconds(50))
        #expect(clock.now - started >= .milliseconds(50))

        nudge.nudge()
        nudge.nudge()
        started = clock.now
        try await nudge.wait(for: .seconds(30))
        #expect(clock.now - started < .seconds(5), "a nudge before the wait ends it at once")
        started = clock.now
        try await nudge.wait(for: .milliseconds(50))
        #expect(clock.now - started >= .milliseconds(50), "two nudges count once")

        started = clock.now
        async let waited: Void = nudge.wait(for: .seconds(30))
        try await Task.sleep(for: .milliseconds(50))
        nudge.nudge()
        try await waited
        #expect(clock.now - started < .seconds(5), "a nudge during the wait ends it")

        let cancelled = Task { try await nudge.wait(for: .seconds(30)) }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
    }
}
