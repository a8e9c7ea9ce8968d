import ClusterModel
import Foundation
@testable import LoadBalancer
import NIOCore
import NIOPosix
import Testing
import TestSupport

/// The node's DNS responder on real sockets (loopback, a free port): service names answered over UDP and TCP,
/// garbage survived, other names forwarded to upstream resolvers (small responders in the test) with SERVFAIL when
/// none answers, and a clean stop.
@Suite("DNS responder: the server on loopback")
struct ServiceDNSServerTests {
    static let vip = IPv4Address("10.96.0.10")!

    /// Hermetic by default: no upstreams (the host's resolv.conf is not read).
    static func configuration(upstreams: [SocketAddress] = [], timeout: Duration = .milliseconds(300)) -> ServiceDNSServer.Configuration {
        var configuration = ServiceDNSServer.Configuration()
        configuration.upstreams = upstreams
        configuration.upstreamTimeout = timeout
        return configuration
    }

    /// Runs a server for the duration of `body`, then stops it and waits until `run` has returned.
    static func withServer<T>(
        _ resolver: any ServiceNameResolver, configuration: ServiceDNSServer.Configuration = configuration(),
        _ body: (ServiceDNSServer) async throws -> T
    ) async throws -> T {
        let server = try await ServiceDNSServer.bind(host: "127.0.0.1", port: 0, resolver: resolver, configuration: configuration)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            let result: T
            do {
                result = try await body(server)
            } catch {
                server.shutdown()
                try? await group.waitForAll()
                throw error
            }
            server.shutdown()
            try await group.waitForAll()
            return result
        }
    }

    static func query(_ name: String, type: DNSRecordType = .a, id: UInt16) -> [UInt8] {
        DNSMessage(id: id, recursionDesired: true, questions: [DNSQuestion(name: DNSName(name)!, type: type)]).encoded()
    }

    /// Sends `datagrams` from one fresh socket and collects the replies until `done` says so, or `timeout` passes
    /// (then what arrived so far).
    static func exchangeUDP(
        _ datagrams: [[UInt8]], with server: SocketAddress, timeout: Duration = .seconds(5),
        until done: @escaping @Sendable ([[UInt8]]) -> Bool = { !$0.isEmpty }
    ) async throws -> [[UInt8]] {
        let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<AddressedEnvelope<ByteBuffer>, AddressedEnvelope<ByteBuffer>>(wrappingChannelSynchronously: channel)
            }
        }
        let timer = channel.channel.eventLoop.scheduleTask(in: TimeAmount(timeout)) { channel.channel.close(promise: nil) }
        defer { timer.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            for datagram in datagrams {
                try await outbound.write(AddressedEnvelope(remoteAddress: server, data: ByteBuffer(bytes: datagram)))
            }
            var replies: [[UInt8]] = []
            do {
                for try await envelope in inbound {
                    replies.append(Array(envelope.data.readableBytesView))
                    if done(replies) { break }
                }
            } catch {
                // Closed by the timer.
            }
            return replies
        }
    }

    /// One query over UDP; its parsed reply, or nil when none came within `timeout`.
    static func ask(_ query: [UInt8], _ server: SocketAddress, timeout: Duration = .seconds(5)) async throws -> DNSMessage? {
        try await exchangeUDP([query], with: server, timeout: timeout).first.map { try DNSMessage(parsing: $0) }
    }

    /// Messages over one TCP connection (each framed with its length); the replies, in order.
    static func exchangeTCP(_ messages: [[UInt8]], with server: SocketAddress, replies count: Int) async throws -> [DNSMessage] {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(to: server) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(DNSTCPFrameDecoder()))
                return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
        let timer = channel.channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.channel.close(promise: nil) }
        defer { timer.cancel() }
        return try await channel.executeThenClose { inbound, outbound in
            for message in messages { try await outbound.write(DNSTCPFrameDecoder.frame(message)) }
            var replies: [DNSMessage] = []
            for try await frame in inbound {
                replies.append(try DNSMessage(parsing: Array(frame.readableBytesView)))
                if replies.count == count { break }
            }
            return replies
        }
    }

    // MARK: - Answers

    @Test("a UDP query for a service gets its virtual IP; an unknown cluster name gets NXDOMAIN")
    func answersOverUDP() async throws {
        let table = ServiceNameTable(["web": [Self.vip]])
        try await Self.withServer(table) { server in
            let address = server.localAddress
            let answer = try #require(try await Self.ask(Self.query("web.flotilla.internal", id: 1), address))
            #expect(answer.id == 1 && answer.responseCode == .noError && answer.isAuthoritative)
            #expect(answer.answers == [.a(DNSName("web.flotilla.internal")!, address: Self.vip.value, ttl: 5)])
            let bare = try #require(try await Self.ask(Self.query("WEB", id: 2), address))
            #expect(bare.answers.compactMap(\.ipv4Address) == [Self.vip.value])
            let unknown = try #require(try await Self.ask(Self.query("nope.flotilla.internal", id: 3), address))
            #expect(unknown.id == 3 && unknown.responseCode == .nameError && unknown.answers.isEmpty)
            let aaaa = try #require(try await Self.ask(Self.query("web.flotilla.internal", type: .aaaa, id: 4), address))
            #expect(aaaa.responseCode == .noError && aaaa.answers.isEmpty)
            // The lead updates the table from the backend tables; the next query sees it.
            table.set([IPv4Address("10.96.0.99")!], forService: "web")
            let moved = try #require(try await Self.ask(Self.query("web", id: 5), address))
            #expect(moved.answers.compactMap(\.ipv4Address) == [IPv4Address("10.96.0.99")!.value])
        }
    }

    @Test("garbage datagrams get FORMERR or nothing, and the server answers the next query")
    func survivesGarbage() async throws {
        try await Self.withServer(ServiceNameTable(["web": [Self.vip]])) { server in
            let garbage: [[UInt8]] = [
                [0xFF],
                [0x00, 0x07, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3F, 0x61],
                [0x00, 0x08, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0, 0x0C, 0x00, 0x01, 0x00, 0x01],
                [0x00, 0x09, 0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
                DNSMessage(id: 10, isResponse: true, questions: [DNSQuestion(name: DNSName("web")!, type: .a)]).encoded(),
            ]
            var random = SplitMix64(seed: 0xBAD_DA7A)
            let noise = (0..<200).map { _ in (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) } }
            let valid = Self.query("web.flotilla.internal", id: 0xABCD)
            let replies = try await Self.exchangeUDP(garbage + noise + [valid], with: server.localAddress) { replies in
                replies.last.flatMap(DNSMessage.peekHeader)?.id == 0xABCD
            }
            let parsed = try replies.map { try DNSMessage(parsing: $0) }
            let answer = try #require(parsed.last)
            #expect(answer.id == 0xABCD && answer.answers.compactMap(\.ipv4Address) == [Self.vip.value])
            let others = parsed.dropLast()
            print("\(garbage.count + noise.count) garbage datagrams: \(others.count) replies, by code: \(Dictionary(grouping: others, by: { "\($0.responseCode)" }).mapValues(\.count))")
            #expect(others.allSatisfy { $0.isResponse && $0.answers.isEmpty && $0.responseCode != .noError })
            #expect(others.contains { $0.id == 7 && $0.responseCode == .formatError })
            #expect(others.contains { $0.id == 8 && $0.responseCode == .formatError })
            #expect(!others.contains { $0.id == 10 })
        }
    }

    @Test("TCP on the same port: an answer truncated over UDP comes whole, garbage gets FORMERR, queries keep their order")
    func tcp() async throws {
        let many = (1...40).map { IPv4Address(0x0A60_0100 + UInt32($0)) }
        try await Self.withServer(ServiceNameTable(["web": [Self.vip], "big": many])) { server in
            let udp = try #require(try await Self.ask(Self.query("big", id: 1), server.localAddress))
            #expect(udp.isTruncated && udp.answers.isEmpty)
            let replies = try await Self.exchangeTCP(
                [Self.query("big", id: 1), [0x00, 0x02, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x3F], Self.query("web", id: 3)], with: server.localAddress, replies: 3)
            #expect(replies.map(\.id) == [1, 2, 3])
            #expect(!replies[0].isTruncated && replies[0].answers.count == 40)
            #expect(replies[1].responseCode == .formatError)
            #expect(replies[2].answers.compactMap(\.ipv4Address) == [Self.vip.value])
        }
    }

    // MARK: - Forwarding

    @Test("other names go to the upstream resolvers in order: a silent one is skipped, the next one's answer relayed")
    func forwards() async throws {
        // The upstream: another responder, authoritative for "example".
        var upstreamConfiguration = Self.configuration()
        upstreamConfiguration.responder.domain = DNSName("example")!
        try await Self.withServer(ServiceNameTable(["www": [IPv4Address("192.0.2.7")!]]), configuration: upstreamConfiguration) { upstream in
            try await withSilentSocket { silent in
                let configuration = Self.configuration(upstreams: [silent, upstream.localAddress], timeout: .milliseconds(300))
                try await Self.withServer(ServiceNameTable(["web": [Self.vip]]), configuration: configuration) { server in
                    #expect(server.upstreams == [silent, upstream.localAddress])
                    let udp = try #require(try await Self.ask(Self.query("www.example", id: 0x4242), server.localAddress))
                    #expect(udp.id == 0x4242 && udp.responseCode == .noError)
                    #expect(udp.answers == [.a(DNSName("www.example")!, address: IPv4Address("192.0.2.7")!.value, ttl: 5)])
                    let missing = try #require(try await Self.ask(Self.query("nope.example", id: 0x4343), server.localAddress))
                    #expect(missing.id == 0x4343 && missing.responseCode == .nameError)
                    // Over TCP the query goes upstream over TCP (the silent one has no TCP listener: refused at once).
                    let tcp = try await Self.exchangeTCP([Self.query("www.example", id: 0x4444)], with: server.localAddress, replies: 1)
                    #expect(tcp.first?.id == 0x4444 && tcp.first?.answers.compactMap(\.ipv4Address) == [IPv4Address("192.0.2.7")!.value])
                }
            }
        }
    }

    @Test("SERVFAIL when no upstream answers in time, or when there is none")
    func serverFailure() async throws {
        try await withSilentSocket { silent in
            let configuration = Self.configuration(upstreams: [silent], timeout: .milliseconds(200))
            try await Self.withServer(ServiceNameTable(), configuration: configuration) { server in
                let reply = try #require(try await Self.ask(Self.query("example.com", id: 77), server.localAddress))
                #expect(reply.id == 77 && reply.responseCode == .serverFailure && reply.questions.first?.name == DNSName("example.com"))
            }
        }
        try await Self.withServer(ServiceNameTable()) { server in
            #expect(server.upstreams.isEmpty)
            let reply = try #require(try await Self.ask(Self.query("example.com", id: 78), server.localAddress))
            #expect(reply.responseCode == .serverFailure)
        }
    }

    @Test("forwards beyond the in-flight limit are answered SERVFAIL at once")
    func forwardLimit() async throws {
        try await withSilentSocket { silent in
            var configuration = Self.configuration(upstreams: [silent], timeout: .seconds(30))
            configuration.maxForwardsInFlight = 1
            try await Self.withServer(ServiceNameTable(), configuration: configuration) { server in
                // The first waits for the silent upstream (30 s, until the server stops); the second is refused.
                let replies = try await Self.exchangeUDP([Self.query("a.example", id: 1), Self.query("b.example", id: 2)], with: server.localAddress)
                let first = try #require(replies.first)
                #expect(try DNSMessage(parsing: first).id == 2 && DNSMessage(parsing: first).responseCode == .serverFailure)
            }
        }
    }

    @Test("upstreams come from resolv.conf's nameserver lines, without the server's own address or zoned addresses")
    func upstreamsFromResolvConf() throws {
        let text = """
            # written by hand
            search example.net
            nameserver 10.255.255.53
            nameserver   127.0.0.53
            ; nameserver 192.0.2.1
            nameserver fd00::53
            nameserver fe80::1%eth0
            nameserver not-an-address
            nameserver 127.0.0.1
            options ndots:2
            """
        #expect(ResolvConf.nameservers(in: text) == ["10.255.255.53", "127.0.0.53", "fd00::53", "fe80::1%eth0", "127.0.0.1"])
        let directory = try TemporaryDirectory()
        try text.write(toFile: directory.path + "/resolv.conf", atomically: true, encoding: .utf8)
        var configuration = ServiceDNSServer.Configuration()
        configuration.resolvConfPath = directory.path + "/resolv.conf"
        // Listening on 127.0.0.1:53 itself: that one is left out (a loop), and so is the zoned link-local address
        // (its zone cannot be kept); the host's loopback resolver stays, since the forwarding runs on the host.
        let own = try SocketAddress(ipAddress: "127.0.0.1", port: 53)
        let upstreams = ServiceDNSServer.upstreams(configuration: configuration, excluding: own).map { "\($0.ipAddress ?? "")" }
        #expect(upstreams == ["10.255.255.53", "127.0.0.53", "fd00::53"])
        // Listening on every address at port 53: no loopback resolver either.
        let wildcard = try SocketAddress(ipAddress: "0.0.0.0", port: 53)
        #expect(ServiceDNSServer.upstreams(configuration: configuration, excluding: wildcard).map { $0.ipAddress ?? "" } == ["10.255.255.53", "fd00::53"])
        // Another port: nothing is the server itself.
        let gateway = try SocketAddress(ipAddress: "10.240.3.1", port: 5353)
        #expect(ServiceDNSServer.upstreams(configuration: configuration, excluding: gateway).count == 4)
    }

    // MARK: - Lifecycle

    @Test("shutdown: run returns and both sockets are released (the same port binds again at once)")
    func stopsCleanly() async throws {
        let port = try await Self.withServer(ServiceNameTable(["web": [Self.vip]])) { server in
            #expect(try await Self.ask(Self.query("web", id: 1), server.localAddress) != nil)
            return try #require(server.localAddress.port)
        }
        let again = try await ServiceDNSServer.bind(host: "127.0.0.1", port: port, resolver: ServiceNameTable(), configuration: Self.configuration())
        #expect(again.localAddress.port == port)
        // Never run: shut down and run returns at once, closing both sockets.
        again.shutdown()
        try await again.run()
    }

    @Test("cancelling the task that runs it stops it too")
    func stopsOnCancellation() async throws {
        let server = try await ServiceDNSServer.bind(host: "127.0.0.1", port: 0, resolver: ServiceNameTable(), configuration: Self.configuration())
        let running = Task { try await server.run() }
        #expect(try await Self.ask(Self.query("web", id: 1), server.localAddress)?.responseCode == .nameError)
        running.cancel()
        _ = await running.result
        let port = try #require(server.localAddress.port)
        let again = try await ServiceDNSServer.bind(host: "127.0.0.1", port: port, resolver: ServiceNameTable(), configuration: Self.configuration())
        again.shutdown()
        try await again.run()
    }

    // MARK: - A real client

    @Test("busybox nslookup resolves a service and hears NXDOMAIN for an unknown one",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/bin/busybox"), "busybox-static is not installed"))
    func busyboxNslookup() async throws {
        try await Self.withServer(ServiceNameTable(["web": [Self.vip]])) { server in
            let target = "127.0.0.1:\(server.localAddress.port!)"
            let found = try await ChildProcess.run("/bin/busybox", ["nslookup", "web.flotilla.internal", target], timeout: .seconds(20))
            print("busybox nslookup web.flotilla.internal:\n\(found.stdout)\(found.stderr)")
            #expect(found.status == 0)
            #expect(found.stdout.contains("Address: 10.96.0.10"))
            let missing = try await ChildProcess.run("/bin/busybox", ["nslookup", "nope.flotilla.internal", target], timeout: .seconds(20))
            print("busybox nslookup nope.flotilla.internal:\n\(missing.stdout)\(missing.stderr)")
            #expect(missing.status != 0)
            #expect((missing.stdout + missing.stderr).contains("NXDOMAIN"))
        }
    }
}

/// A UDP socket on loopback that reads and never answers: an upstream resolver that is down.
func withSilentSocket<T>(_ body: (SocketAddress) async throws -> T) async throws -> T {
    let channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).get()
    do {
        let result = try await body(channel.localAddress!)
        try await channel.close()
        return result
    } catch {
        try? await channel.close()
        throw error
    }
}
