import AdminClient
import Foundation
import PKI
import Synchronization
import TestSupport
import Testing
import Transport
import Wire

/// The admin client against fake controllers: RPC servers on loopback whose handlers answer as a follower
/// (NOT_LEADER), a leader, or a controller that dies mid-call would.
@Suite("Admin client redirects and retries")
struct AdminClientRedirectTests {
    /// Counts the calls a fake handler received.
    final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func increment() { value.add(1, ordering: .relaxed) }
        var count: Int { value.load(ordering: .relaxed) }
    }

    /// Drops calls still running 100 ms after a graceful shutdown began: a connection lost mid-call.
    static let quickShutdown = {
        var configuration = TransportConfiguration()
        configuration.shutdownGracePeriod = .milliseconds(100)
        return configuration
    }()

    static func address(_ server: RPCServer) -> String { "127.0.0.1:\(server.localAddress.port!)" }

    /// A router whose VarPut and VarGet answer like a leader, counting the calls.
    static func leaderRouter(index: UInt64, calls: Counter) -> RPCRouter {
        var router = RPCRouter()
        router.register(Methods.varPut) { request, _ in
            calls.increment()
            #expect(request.key == "greeting")
            #expect(request.value == Data("hello".utf8))
            var response = Flotilla_V1_VarWriteResponse()
            response.index = index
            return response
        }
        router.register(Methods.varGet) { request, _ in
            calls.increment()
            var response = Flotilla_V1_VarGetResponse()
            response.variable.key = request.key
            response.variable.value = Data("hello".utf8)
            response.variable.createIndex = index
            response.variable.modifyIndex = index
            return response
        }
        return router
    }

    /// A router whose VarPut and VarGet start, count the call, then never answer (until cancelled).
    static func hangingRouter(calls: Counter) -> RPCRouter {
        var router = RPCRouter()
        router.register(Methods.varPut) { _, _ in
            calls.increment()
            try await Task.sleep(for: .seconds(60))
            throw RPCError(.internalError, "unreachable")
        }
        router.register(Methods.varGet) { _, _ in
            calls.increment()
            try await Task.sleep(for: .seconds(60))
            throw RPCError(.internalError, "unreachable")
        }
        return router
    }

    @Test("a write sent to a follower follows NOT_LEADER to the leader and returns the leader's answer")
    func followsRedirect() async throws {
        let pki = try TestPKI()
        let onFollower = Counter()
        let onLeader = Counter()
        try await withTestServer(credentials: pki.controller, router: Self.leaderRouter(index: 42, calls: onLeader)) { leader in
            let leaderAddress = Self.address(leader)
            var followerRouter = RPCRouter()
            followerRouter.register(Methods.varPut) { _, _ in
                onFollower.increment()
                throw RPCError(.notLeader, "not the leader", leaderAddress: leaderAddress)
            }
            try await withTestServer(credentials: pki.controller, router: followerRouter) { follower in
                let client = try await AdminClient.connect(to: [Self.address(follower)], credentials: pki.admin)
                let index = try await client.varPut(key: "greeting", value: Data("hello".utf8))
                #expect(index == 42)
                #expect(onFollower.count == 1)
                #expect(onLeader.count == 1)
                // The client stays with the leader: the next write goes there directly.
                #expect(client.controllerAddress == leaderAddress)
                _ = try await client.varPut(key: "greeting", value: Data("hello".utf8))
                #expect(onFollower.count == 1)
                #expect(onLeader.count == 2)
                await client.close()
            }
        }
    }

    @Test("a call gives up after five redirects that never reach a leader")
    func boundedRedirects() async throws {
        let pki = try TestPKI()
        let calls = Counter()
        let selfAddress = Mutex("")
        var router = RPCRouter()
        router.register(Methods.varPut) { _, _ in
            calls.increment()
            throw RPCError(.notLeader, "not the leader", leaderAddress: selfAddress.withLock { $0 })
        }
        try await withTestServer(credentials: pki.controller, router: router) { server in
            selfAddress.withLock { $0 = Self.address(server) }
            let client = try await AdminClient.connect(to: [Self.address(server)], credentials: pki.admin)
            let error = await #expect(throws: RPCError.self) {
                _ = try await client.varPut(key: "greeting", value: Data("hello".utf8))
            }
            #expect(error?.code == .notLeader)
            #expect(error?.message.contains("redirected 5 times") == true)
            #expect(calls.count == 6)
            await client.close()
        }
    }

    @Test("with no leader known the client waits and asks the next configured controller")
    func noLeaderKnown() async throws {
        let pki = try TestPKI()
        let onFollower = Counter()
        let onLeader = Counter()
        let followerRouter = {
            var router = RPCRouter()
            router.register(Methods.varPut) { _, _ in
                onFollower.increment()
                throw RPCError(.notLeader, "no leader is known yet (an election is under way)")
            }
            return router
        }()
        try await withTestServer(credentials: pki.controller, router: Self.leaderRouter(index: 7, calls: onLeader)) { leader in
            try await withTestServer(credentials: pki.controller, router: followerRouter) { follower in
                let client = try await AdminClient.connect(
                    to: [Self.address(follower), Self.address(leader)], credentials: pki.admin)
                let start = ContinuousClock.now
                let index = try await client.varPut(key: "greeting", value: Data("hello".utf8))
                #expect(index == 7)
                #expect(ContinuousClock.now - start >= .milliseconds(150))
                #expect(onFollower.count == 1)
                #expect(onLeader.count == 1)
                await client.close()
            }
        }
    }

    @Test("a write whose connection is lost mid-call is not retried, and the error says the outcome is unknown")
    func writeLostMidCallIsNotRetried() async throws {
        let pki = try TestPKI()
        let onDying = Counter()
        let onOther = Counter()
        let quickShutdown = Self.quickShutdown
        try await withTestServer(credentials: pki.controller, router: Self.leaderRouter(index: 9, calls: onOther)) { other in
            try await withTestServer(
                credentials: pki.controller, configuration: quickShutdown, router: Self.hangingRouter(calls: onDying)
            ) { dying in
                let client = try await AdminClient.connect(
                    to: [Self.address(dying), Self.address(other)], credentials: pki.admin)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let error = await #expect(throws: RPCError.self) {
                            _ = try await client.varPut(key: "greeting", value: Data("hello".utf8))
                        }
                        #expect(error?.code == .unavailable)
                        #expect(error?.message.contains("outcome is unknown") == true, "\(String(describing: error))")
                    }
                    #expect(try await eventually { onDying.count == 1 })
                    // The server drops the call once the grace period passes: the connection dies mid-call.
                    dying.beginGracefulShutdown()
                    try await group.waitForAll()
                }
                #expect(onDying.count == 1)
                #expect(onOther.count == 0)
                await client.close()
            }
        }
    }

    @Test("a read whose connection is lost mid-call is retried on the next controller")
    func readLostMidCallIsRetried() async throws {
        let pki = try TestPKI()
        let onDying = Counter()
        let onOther = Counter()
        let quickShutdown = Self.quickShutdown
        try await withTestServer(credentials: pki.controller, router: Self.leaderRouter(index: 9, calls: onOther)) { other in
            try await withTestServer(
                credentials: pki.controller, configuration: quickShutdown, router: Self.hangingRouter(calls: onDying)
            ) { dying in
                let client = try await AdminClient.connect(
                    to: [Self.address(dying), Self.address(other)], credentials: pki.admin)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        let variable = try await client.varGet(key: "greeting")
                        #expect(variable.value == Data("hello".utf8))
                        #expect(variable.modifyIndex == 9)
                    }
                    #expect(try await eventually { onDying.count == 1 })
                    dying.beginGracefulShutdown()
                    try await group.waitForAll()
                }
                #expect(onOther.count == 1)
                await client.close()
            }
        }
    }

    @Test("a write goes to the next controller when the first one is already gone (nothing was sent)")
    func writeAfterControllerStopped() async throws {
        let pki = try TestPKI()
        let onOther = Counter()
        try await withTestServer(credentials: pki.controller, router: Self.leaderRouter(index: 11, calls: onOther)) { other in
            let client = try await withTestServer(credentials: pki.controller) { first in
                try await AdminClient.connect(to: [Self.address(first), Self.address(other)], credentials: pki.admin)
            }
            // `first` has shut down and closed the client's connection.
            let index = try await client.varPut(key: "greeting", value: Data("hello".utf8))
            #expect(index == 11)
            #expect(onOther.count == 1)
            #expect(client.controllerAddress == Self.address(other))
            await client.close()
        }
    }
}
