import AdminClient
import Agent
import Balancing
import ClusterModel
import ContainerRuntime
import Controller
import Foundation
import LoadBalancer
import Logging
import Messages
import NIOPosix
import PKI
import Testing
import TestSupport

/// `flotilla lb stats` end to end: in-process agents run a `NodeBalancer` each (as flotilla-agent does) on their
/// own loopback address, requests go through them to process-driver replicas, the agents report, the leader
/// keeps the reports, and the CLI shows them.
@Suite("Load-balancer statistics in a cluster", .serialized)
struct BalancerStatsClusterTests {
    /// The agent's wiring of its balancer: tables in, reports out.
    struct Tables: BackendTableReceiver {
        let balancer: NodeBalancer
        func apply(_ change: TableSetChange, set: ServiceTableSet) async { await balancer.apply(set, change: change) }
    }

    struct Stats: BalancerStatsSource {
        let balancer: NodeBalancer
        func balancerReport() async -> Flotilla_V1_BalancerReport { await balancer.report() }
    }

    static func web(_ nodes: [Flotilla_V1_NodeBalancerStats], _ name: String) -> Flotilla_V1_ServiceBalancerStats? {
        nodes.first { $0.nodeName == name }?.report.services.first { $0.serviceName == "web" }
    }

    @Test("requests through a node's balancer show in lb stats per node and backend; a node that left shows stale; bad input is named")
    func requestsShowInStats() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-lb-stats")
        let created = try ControllerDataDirectory(path: work.path + "/controller").initialize(addresses: [], now: Date())
        let running = try await ControllerClusterTests.start(work.path + "/controller")
        let threads = ProxyThreads(workers: 1)
        let hosts = ["n1": "127.0.0.2", "n2": "127.0.0.3"]
        let balancers = hosts.mapValues { NodeBalancer(threads: threads, meshHost: $0, serveVirtualIPs: false, logger: Logger(label: "lb")) }
        var agents = InProcessAgents()
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            agents = try await InProcessAgents.start(
                ["n1", "n2"], controllers: [server.localAddress], admin: admin,
                tables: { Tables(balancer: balancers[$0]!) }, balancerStats: { Stats(balancer: balancers[$0]!) })
            #expect(try await eventually { (try? await admin.nodeList())?.filter { $0.status == "ready" }.count == 2 })

            let published = try #require(ProcessDriver.freePort())
            var spec = Flotilla_V1_ServiceSpec.process(
                "web", command: "exec python3 -m http.server --bind 127.0.0.1 $PORT", replicas: 2, monitorMs: 0)
            var port = Flotilla_V1_PortSpec()
            port.targetPort = 8000
            port.publishedPort = UInt32(published)
            spec.ports = [port]
            spec.lbMode = "http"
            _ = try await admin.serviceCreate(spec)

            // Both replicas answer directly, and both balancers have them in their table.
            let ready = try await eventually(timeout: .seconds(30)) {
                let tasks = ((try? await admin.serviceInspect("web").tasks) ?? []).filter { $0.state == .running && !$0.address.isEmpty }
                guard tasks.count == 2 else { return false }
                for task in tasks {
                    guard let (host, port) = HostPort.parse(task.address),
                          (try? TestHTTPClient(host: host, port: port).request(close: true))?.status == 200 else { return false }
                }
                for balancer in balancers.values {
                    guard await balancer.current.tables.values.first(where: { $0.name == "web" })?.backends.count == 2 else { return false }
                }
                return true
            }
            #expect(ready, "two replicas answering, in both balancers' tables")
            guard ready else { throw ChildProcessError("the service never became reachable through both balancers") }
            let tasks = try await admin.serviceInspect("web").tasks.filter { $0.state == .running }.map(\.id).sorted()

            // 20 requests through n1's balancer, 6 through n2's.
            for (name, count) in [("n1", 20), ("n2", 6)] {
                let client = TestHTTPClient(host: hosts[name]!, port: published)
                for _ in 0..<count { #expect(try client.request().status == 200) }
                client.reset()
            }
            let counted = try await eventually(timeout: .seconds(20)) {
                let nodes = (try? await admin.balancerStats()) ?? []
                let n1 = Self.web(nodes, "n1")?.backends.map(\.requests).reduce(0, +)
                let n2 = Self.web(nodes, "n2")?.backends.map(\.requests).reduce(0, +)
                return n1 == 20 && n2 == 6
            }
            let nodes = try await admin.balancerStats()
            #expect(counted, "reports: \(nodes)")
            let n1 = try #require(Self.web(nodes, "n1"))
            print("n1's balancer: requests per backend", n1.backends.map { "\($0.taskID.prefix(8))=\($0.requests)" })
            #expect(n1.backends.map(\.taskID) == tasks, "every backend of the table, by task id")
            #expect(n1.backends.allSatisfy { $0.requests > 0 && $0.errors == 0 && $0.bytesOut > 0 && $0.latency.count == $0.requests })
            #expect(n1.publishedPort == UInt32(published) && n1.targetPort == 8000 && n1.mode == "http")
            #expect(nodes.allSatisfy { $0.reported && $0.connected })

            // The CLI: a table with each node's backends and the service's total; JSON with every field.
            let cluster = ["--controller", server.localAddress, "--credentials", created.adminCredentialsPath]
            let table = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "web"])
            print(table.stdout)
            #expect(table.status == 0, "\(table.stderr)")
            let lines = table.stdout.split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("NODE") == true)
            #expect(lines.filter { $0.hasPrefix("n1 ") }.count == 2 && lines.filter { $0.hasPrefix("n2 ") }.count == 2)
            #expect(lines.contains { $0.contains("total") && $0.contains(" 26 ") }, "26 requests in all")
            let json = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "--node", "n2", "--output", "json"])
            #expect(json.status == 0, "\(json.stderr)")
            let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
            let services = try #require(object["services"] as? [[String: Any]])
            #expect(services.count == 1 && services.first?["requests"] as? Int == 6)
            let backends = try #require(object["backends"] as? [[String: Any]])
            #expect(backends.count == 2 && backends.allSatisfy { $0["node"] as? String == "n2" && $0["latency_buckets"] is [Any] })
            #expect((object["nodes"] as? [[String: Any]])?.first?["connected"] as? Bool == true)

            // Bad input: named, exit status 1 (the cluster's answer) or 2 (usage).
            let unknownNode = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "--node", "nowhere"])
            #expect(unknownNode.status == 1)
            #expect(unknownNode.stderr.contains("no node with id or name 'nowhere'"), "\(unknownNode.stderr)")
            let unknownService = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "nosuch"])
            #expect(unknownService.status == 1)
            #expect(unknownService.stderr.contains("no service named 'nosuch'"), "\(unknownService.stderr)")
            let badFormat = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "--output", "yaml"])
            #expect(badFormat.status == 2, "\(badFormat.stderr)")

            // n2's agent goes away: its last numbers stay, marked stale with their age.
            agents.sessions[1].cancel()
            let stale = try await eventually(timeout: .seconds(20)) {
                let n2 = (try? await admin.balancerStats(node: "n2"))?.first
                return n2?.reported == true && n2?.connected == false
            }
            #expect(stale)
            let afterLeaving = try await admin.balancerStats(node: "n2", service: "web")
            #expect(Self.web(afterLeaving, "n2")?.backends.map(\.requests).reduce(0, +) == 6)
            let staleTable = try await ControllerProcessTests.flotilla(cluster + ["lb", "stats", "--node", "n2"])
            #expect(staleTable.stdout.contains("n2 (stale, "), "\(staleTable.stdout)")
            await admin.close()
        } catch {
            await agents.stop()
            for balancer in balancers.values { await balancer.shutdown() }
            await ControllerClusterTests.stop(running)
            await threads.shutdown()
            throw error
        }
        await agents.stop()
        for balancer in balancers.values { await balancer.shutdown() }
        await ControllerClusterTests.stop(running)
        await threads.shutdown()
    }
}
