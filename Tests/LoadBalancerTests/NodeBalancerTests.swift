import Balancing
import LoadBalancer
import Logging
import NIOCore
import NIOPosix
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The node's balancer serving the leader's tables on published ports, in process on 127.0.0.1.
@Suite struct NodeBalancerTests {
    @Test func anUpdateKeepsAnEstablishedConnectionOnItsBackendWhileNewConnectionsGoToTheNewTable() async throws {
        try await Self.withBalancer(backends: 2) { balancer, backends, port in
            var set = ServiceTableSet()
            _ = set.apply(complete: true, tables: [Self.table(version: 1, port: port, backends: [backends[0]])], removed: [])
            await balancer.apply(set, change: TableSetChange(added: ["s1"]))
            let old = try #require(try await Self.connect(port: port))
            defer { old.close() }
            #expect(old.exchange("first") == "first")

            // Version 2 has only b1: the open connection stays on b0, new ones go to b1.
            let change = set.apply(complete: false, tables: [Self.table(version: 2, port: port, backends: [backends[1]])], removed: [])
            #expect(change == TableSetChange(changed: ["s1"]))
            await balancer.apply(set, change: change)
            #expect(old.exchange("second") == "second")
            #expect(old.finish() == "bye from b0")
            #expect(TestTCPClient.exchange(port: port, send: "new") == "newbye from b1")
        }
    }

    @Test func aPortWhoseModeChangesIsReopenedAndSpeaksTheNewMode() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let web = try await TestHTTPBackend.start(name: "web", group: group)
        try await Self.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            _ = set.apply(complete: true, tables: [Self.table(version: 1, port: port, backends: [backends[0]])], removed: [])
            await balancer.apply(set, change: TableSetChange(added: ["s1"]))
            #expect(TestTCPClient.exchange(port: port, send: "tcp") == "tcpbye from b0")

            var http = Self.table(version: 2, port: port, backends: [Backend(id: "web", host: "127.0.0.1", port: web.port)])
            http.mode = .http
            http.ports = [ServiceTable.Port(published: port, target: web.port, mode: .http)]
            let change = set.apply(complete: false, tables: [http], removed: [])
            await balancer.apply(set, change: change)
            let response = try TestHTTPClient(port: port).request("/hello")
            #expect(response.status == 200)
            #expect(response.body.hasPrefix("web "))
            let stats = await balancer.stats()
            #expect(stats.map(\.mode) == ["http"])
        }
        await web.kill()
        try await group.shutdownGracefully()
    }

    @Test func aRemovedServiceStopsListeningOnItsPort() async throws {
        try await Self.withBalancer(backends: 1) { balancer, backends, port in
            var set = ServiceTableSet()
            _ = set.apply(complete: true, tables: [Self.table(version: 1, port: port, backends: [backends[0]])], removed: [])
            await balancer.apply(set, change: TableSetChange(added: ["s1"]))
            #expect(TestTCPClient.exchange(port: port, send: "up") == "upbye from b0")
            let change = set.apply(complete: false, tables: [], removed: ["s1"])
            await balancer.apply(set, change: change)
            #expect(TestTCPClient.exchange(port: port, send: "gone") == nil, "nothing listens on the port any more")
        }
    }

    // MARK: Fixture

    static func table(version: UInt64, port: Int, backends: [TestTCPBackend]) -> ServiceTable {
        table(version: version, port: port, backends: backends.map { Backend(id: $0.name, host: "127.0.0.1", port: $0.port) })
    }

    static func table(version: UInt64, port: Int, backends: [Backend]) -> ServiceTable {
        ServiceTable(serviceID: "s1", name: "echo", version: version, ports: [ServiceTable.Port(published: port, target: backends.first?.port ?? 1, mode: .tcp)],
                     backends: backends)
    }

    /// A node balancer on 127.0.0.1 with `count` TCP backends and a free port for the service to publish.
    static func withBalancer(backends count: Int, _ body: (NodeBalancer, [TestTCPBackend], Int) async throws -> Void) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var backends: [TestTCPBackend] = []
        for index in 0..<count { backends.append(try await TestTCPBackend.start(name: "b\(index)", group: group)) }
        let threads = ProxyThreads(workers: 2)
        let balancer = NodeBalancer(threads: threads, meshHost: "127.0.0.1", serveVirtualIPs: false, logger: Logger(label: "test"))
        var failure: (any Error)?
        do { try await body(balancer, backends, try freePort()) } catch { failure = error }
        await balancer.shutdown()
        await threads.shutdown()
        for backend in backends { await backend.stop() }
        try? await group.shutdownGracefully()
        if let failure { throw failure }
    }

    /// A port nothing listens on now (the kernel's pick for port 0, released at once).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A blocking client connection kept open across table updates.
    final class Connection {
        let fd: Int32
        init(fd: Int32) { self.fd = fd }

        /// Sends `text` and reads the echo of the same length.
        func exchange(_ text: String) -> String? {
            guard text.utf8CString.withUnsafeBufferPointer({ send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) }) == text.utf8.count else { return nil }
            return read(upTo: text.utf8.count)
        }

        /// Half-closes and reads until the peer closes.
        func finish() -> String? {
            shutdown(fd, Int32(SHUT_WR))
            return read(upTo: Int.max)
        }

        private func read(upTo limit: Int) -> String? {
            var reply: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while reply.count < limit {
                let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, limit - reply.count), 0) }
                if count == 0 { break }
                if count < 0 { return nil }
                reply.append(contentsOf: chunk[0..<count])
            }
            return String(decoding: reply, as: UTF8.self)
        }

        func close() { Glibc.close(fd) }
    }

    /// Connects to the balancer, retrying briefly while its listener starts.
    static func connect(port: Int) async throws -> Connection? {
        for _ in 0..<50 {
            if let fd = TestTCPClient.connect(port: port) { return Connection(fd: fd) }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }
}
