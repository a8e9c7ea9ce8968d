import Balancing
import LoadBalancer
import TestSupport
import Testing

/// What each policy means for real requests through the HTTP balancer.
@Suite struct PolicyBehaviourTests {
    @Test func leastConnectionsSendsLessToABackendThatIsSlowToAnswer() async throws {
        try await HTTPProxyTests.withProxy(backends: 3, settings: ProxySettings(mode: .http, policy: .leastConnections)) { proxy, backends in
            backends[0].behaviour = .delay(200)
            // Eight clients at once: a slow backend holds its requests open, so it counts more connections.
            let port = proxy.port
            let answers = await withTaskGroup(of: [String].self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let client = TestHTTPClient(port: port)
                        return (0..<25).compactMap { _ in (try? client.request())?.body.prefix(2).description }
                    }
                }
                return await group.reduce(into: [String]()) { $0 += $1 }
            }
            let counts = Dictionary(grouping: answers, by: { $0 }).mapValues(\.count)
            print("least-conn, b0 answering in 200 ms, 8 clients x 25 requests:", counts.sorted { $0.key < $1.key })
            #expect(answers.count == 200)
            #expect((counts["b0"] ?? 0) * 4 < min(counts["b1"] ?? 0, counts["b2"] ?? 0))
        }
    }

    @Test func ipHashKeepsEveryClientOnOneBackendAndSpreadsClients() async throws {
        try await HTTPProxyTests.withProxy(backends: 3, settings: ProxySettings(mode: .http, policy: .ipHash)) { proxy, _ in
            var backendOfClient: [String: Set<String>] = [:]
            for client in 1...30 {
                let source = "127.0.\(client / 250).\(client % 250 + 2)"
                let connection = TestHTTPClient(port: proxy.port, source: source)
                for _ in 0..<5 {
                    let response = try connection.request()
                    #expect(response.body.contains("xff=\(source) "))
                    backendOfClient[source, default: []].insert(String(response.body.prefix(2)))
                    connection.reset()  // a new connection each time: the hash, not the connection, keeps it there
                }
            }
            let used = Set(backendOfClient.values.flatMap { $0 })
            let perBackend = Dictionary(grouping: backendOfClient.values.compactMap(\.first), by: { $0 }).mapValues(\.count)
            print("ip-hash, 30 client addresses x 5 connections: clients per backend", perBackend.sorted { $0.key < $1.key })
            #expect(backendOfClient.values.allSatisfy { $0.count == 1 })
            #expect(used.count == 3)
        }
    }
}
