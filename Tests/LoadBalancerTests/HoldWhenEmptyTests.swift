import Balancing
import LoadBalancer
import NIOPosix
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A service scaled to zero: the node's balancer holds connections (HTTP: requests) while its table has no
/// backend, asks for a replica, and forwards them once a backend arrives, or gives up at the hold limits.
@Suite struct HoldWhenEmptyTests {
    // MARK: TCP

    @Test("TCP: a connection to an empty hold table waits, and its first bytes reach the backend once one arrives")
    func tcpHeldThenForwarded() async throws {
        try await NodeBalancerTests.withBalancer(backends: 1) { balancer, backends, port in
            let woken = Atomic<Int>(0)
            balancer.onWake { woken.add(1, ordering: .relaxed) }
            var set = ServiceTableSet()
            await Self.serve(Self.tcpTable(version: 1, port: port, target: backends[0].port, backends: []), on: balancer, set: &set)
            #expect(await balancer.wakingServices() == [])

            // The client speaks first and half-closes: nothing is lost while it waits.
            async let reply = onOwnThread { TestTCPClient.exchange(port: port, send: "hello") }
            let waking = try await eventually { await balancer.wakingServices() == ["s1"] }
            #expect(waking)
            #expect(woken.load(ordering: .relaxed) == 1, "the first held connection wakes the node at once")
            let held = await balancer.stats().first?.held
            #expect(held == 1)

            let backend = Backend(id: "b0", host: "127.0.0.1", port: backends[0].port)
            await Self.serve(Self.tcpTable(version: 2, port: port, target: backends[0].port, backends: [backend]), on: balancer, set: &set)
            let forwarded = try await reply
            #expect(forwarded == "hellobye from b0")
            #expect(await balancer.wakingServices() == [])
        }
    }

    @Test("TCP: a held connection is closed at the hold timeout, and counted")
    func tcpHoldTimeout() async throws {
        try await NodeBalancerTests.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            var table = Self.tcpTable(version: 1, port: port, target: backends[0].port, backends: [])
            table.settings.holdTimeout = .milliseconds(300)
            await Self.serve(table, on: balancer, set: &set)
            let started = ContinuousClock.now
            let reply = try await onOwnThread { TestTCPClient.exchange(port: port, send: "anyone?") }
            let waited = ContinuousClock.now - started
            #expect(reply == "", "closed without an answer")
            #expect(waited >= .milliseconds(250) && waited < .seconds(5), "\(waited)")
            let stats = try #require(await balancer.stats().first)
            #expect(stats.holdTimeouts == 1 && stats.rejected == 1 && stats.held == 0)
            #expect(await balancer.wakingServices() == [])
        }
    }

    @Test("TCP: beyond the queue limit a connection is refused at once; the held one is still served")
    func tcpQueueLimit() async throws {
        try await NodeBalancerTests.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            var table = Self.tcpTable(version: 1, port: port, target: backends[0].port, backends: [])
            table.settings.holdQueueLimit = 1
            await Self.serve(table, on: balancer, set: &set)
            async let first = onOwnThread { TestTCPClient.exchange(port: port, send: "first") }
            let holding = try await eventually { await balancer.stats().first?.held == 1 }
            #expect(holding)
            let started = ContinuousClock.now
            // Refused as without hold: closed at once (reset when the close beats the client's bytes in).
            let second = TestTCPClient.exchange(port: port, send: "second")
            #expect(second == "" || second == nil, "refused, no answer: \(second ?? "reset")")
            #expect(ContinuousClock.now - started < .seconds(5))

            table.version = 2
            table.backends = [Backend(id: "b0", host: "127.0.0.1", port: backends[0].port)]
            await Self.serve(table, on: balancer, set: &set)
            let forwarded = try await first
            #expect(forwarded == "firstbye from b0")
        }
    }

    @Test("TCP: held connections are refused when the table turns hold off; a table without hold refuses at once")
    func tcpHoldTurnedOff() async throws {
        try await NodeBalancerTests.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            var table = Self.tcpTable(version: 1, port: port, target: backends[0].port, backends: [])
            await Self.serve(table, on: balancer, set: &set)
            async let held = onOwnThread { TestTCPClient.exchange(port: port, send: "waiting") }
            let waking = try await eventually { await balancer.wakingServices() == ["s1"] }
            #expect(waking)
            table.version = 2
            table.holdWhenEmpty = false
            await Self.serve(table, on: balancer, set: &set)
            let refused = try await held
            #expect(refused == "")
            #expect(await balancer.wakingServices() == [])
            // Today's behaviour without hold: closed at once, nothing held.
            let now = TestTCPClient.exchange(port: port, send: "now")
            #expect(now == "" || now == nil, "refused, no answer: \(now ?? "reset")")
            #expect(await balancer.wakingServices() == [])
            #expect(await balancer.stats().first?.rejected == 2)
        }
    }

    @Test("TCP: a held connection is refused when its service is removed; one whose client resets leaves the queue")
    func tcpServiceRemoved() async throws {
        try await NodeBalancerTests.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            await Self.serve(Self.tcpTable(version: 1, port: port, target: backends[0].port, backends: []), on: balancer, set: &set)

            // A client that gives up with a reset is not held any more.
            let gaveUp = try #require(TestTCPClient.connect(port: port))
            let holding = try await eventually { await balancer.wakingServices() == ["s1"] }
            #expect(holding)
            var reset = linger(l_onoff: 1, l_linger: 0)
            setsockopt(gaveUp, SOL_SOCKET, SO_LINGER, &reset, socklen_t(MemoryLayout<linger>.size))
            close(gaveUp)
            let left = try await eventually { await balancer.wakingServices() == [] }
            #expect(left)

            async let held = onOwnThread { TestTCPClient.exchange(port: port, send: "waiting") }
            let waiting = try await eventually { await balancer.wakingServices() == ["s1"] }
            #expect(waiting)
            let change = set.apply(complete: false, tables: [], removed: ["s1"])
            await balancer.apply(set, change: change)
            let refused = try await held
            #expect(refused == "")
            #expect(await balancer.wakingServices() == [])
        }
    }

    // MARK: HTTP

    @Test("HTTP: a request to an empty hold table waits and is answered by the first backend that arrives")
    func httpHeldThenForwarded() async throws {
        try await Self.withHTTP { balancer, web, port in
            var set = ServiceTableSet()
            await Self.serve(Self.httpTable(version: 1, port: port, target: web.port, backends: []), on: balancer, set: &set)
            async let response = onOwnThread { try TestHTTPClient(port: port).request("/first") }
            let waking = try await eventually { await balancer.wakingServices() == ["s1"] }
            #expect(waking)
            let backend = Backend(id: "web", host: "127.0.0.1", port: web.port)
            await Self.serve(Self.httpTable(version: 2, port: port, target: web.port, backends: [backend]), on: balancer, set: &set)
            let answer = try await response
            #expect(answer.status == 200)
            #expect(answer.body.hasPrefix("web ") && answer.body.contains("path=/first"), "\(answer.body)")
            #expect(await balancer.wakingServices() == [])
        }
    }

    @Test("HTTP: a held request gets a 503 saying no replica started in time; without hold a 503 at once")
    func httpHoldTimeout() async throws {
        try await Self.withHTTP { balancer, web, port in
            var set = ServiceTableSet()
            var table = Self.httpTable(version: 1, port: port, target: web.port, backends: [])
            table.settings.holdTimeout = .milliseconds(300)
            await Self.serve(table, on: balancer, set: &set)
            let timedOut = try await onOwnThread { try TestHTTPClient(port: port).request("/late") }
            #expect(timedOut.status == 503)
            #expect(timedOut.body == "503 Service Unavailable: no replica of echo:\(web.port) started within 300 ms; try again shortly\n")
            let stats = try #require(await balancer.stats().first)
            #expect(stats.holdTimeouts == 1 && stats.held == 0)

            table.version = 2
            table.holdWhenEmpty = false
            await Self.serve(table, on: balancer, set: &set)
            let refused = try await onOwnThread { try TestHTTPClient(port: port).request("/now") }
            #expect(refused.status == 503)
            #expect(refused.body.contains("no backend is available"), "\(refused.body)")
            #expect(await balancer.wakingServices() == [])
        }
    }

    @Test("HTTP: beyond the queue limit a request gets a 503 at once; the held one is answered")
    func httpQueueLimit() async throws {
        try await Self.withHTTP { balancer, web, port in
            var set = ServiceTableSet()
            var table = Self.httpTable(version: 1, port: port, target: web.port, backends: [])
            table.settings.holdQueueLimit = 1
            await Self.serve(table, on: balancer, set: &set)
            async let first = onOwnThread { try TestHTTPClient(port: port).request("/first") }
            let holding = try await eventually { await balancer.stats().first?.held == 1 }
            #expect(holding)
            let second = try await onOwnThread { try TestHTTPClient(port: port).request("/second") }
            #expect(second.status == 503)
            table.version = 2
            table.backends = [Backend(id: "web", host: "127.0.0.1", port: web.port)]
            await Self.serve(table, on: balancer, set: &set)
            let answered = try await first
            #expect(answered.status == 200)
        }
    }

    // MARK: Fixture

    static func tcpTable(version: UInt64, port: Int, target: Int, backends: [Backend]) -> ServiceTable {
        ServiceTable(serviceID: "s1", name: "echo", version: version, ports: [ServiceTable.Port(published: port, target: target, mode: .tcp)],
                     backends: backends, holdWhenEmpty: true)
    }

    static func httpTable(version: UInt64, port: Int, target: Int, backends: [Backend]) -> ServiceTable {
        ServiceTable(serviceID: "s1", name: "echo", version: version, mode: .http,
                     ports: [ServiceTable.Port(published: port, target: target, mode: .http)], backends: backends, holdWhenEmpty: true)
    }

    /// Applies `table` as the leader's next update.
    static func serve(_ table: ServiceTable, on balancer: NodeBalancer, set: inout ServiceTableSet) async {
        let change = set.apply(complete: false, tables: [table], removed: [])
        await balancer.apply(set, change: change)
    }

    /// A node balancer with an HTTP backend (not in any table until a test puts it there).
    static func withHTTP(_ body: (NodeBalancer, TestHTTPBackend, Int) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let web = try await TestHTTPBackend.start(name: "web", group: group)
        var failure: (any Error)?
        do {
            try await NodeBalancerTests.withBalancer(backends: 0) { balancer, _, port in try await body(balancer, web, port) }
        } catch {
            failure = error
        }
        await web.kill()
        try? await group.shutdownGracefully()
        if let failure { throw failure }
    }
}
