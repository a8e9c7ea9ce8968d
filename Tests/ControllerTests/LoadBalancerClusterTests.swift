import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// The node load balancer in a cluster of real processes, hosts as network namespaces (see NetnsLab): every
/// node's balancer serves published ports from the leader's backend tables, and containers reach services by
/// name through their virtual IPs.
@Suite("Load balancer across hosts (network namespaces)", .serialized)
struct LoadBalancerClusterTests {
    static let serve = "mkdir -p /www && echo $FLOTILLA_TASK_ID > /www/index.html && exec httpd -f -p $PORT -h /www"

    @Test("a published port on any node reaches replicas on every node, round robin spreading evenly", .enabled(if: NetnsLab.available))
    func routingMesh() async throws {
        try await NetnsLab.run { lab, _ in
            try OCIServiceTests.makeBusyboxLayout(lab.work.path + "/image")
            _ = try await lab.flotilla([
                "service", "create", "web", "--driver", "oci", "--image", "oci:\(lab.work.path)/image:1.0", "--replicas", "4",
                "--max-per-node", "2", "--publish", "9090:8080", "--command", Self.serve, "--detach"])
            let placed = try #require(try await lab.runningTasks("web", count: 4))
            try #require(Set(placed.map(\.node)).count == 2, "two replicas per host: \(placed)")
            // Host 1 runs no agent: it is a client reaching the mesh through either agent host.
            for node in [2, 3] {
                let url = "http://\(lab.address(node)):9090/"
                let first = try await eventually(timeout: .seconds(20)) { await NetnsLab.fetch(url, in: lab.host(1)) != nil }
                try #require(first, "node \(node) answers on its published port")
                var answers: [String: Int] = [:]
                for _ in 0..<40 {
                    if let answer = await NetnsLab.fetch(url, in: lab.host(1)) { answers[answer, default: 0] += 1 }
                }
                print("40 requests to node n\(node)'s published port:", answers.sorted { $0.key < $1.key }.map { "\($0.key.prefix(8))=\($0.value)" })
                #expect(Set(answers.keys) == Set(placed.map(\.id)), "replicas on both hosts answer through n\(node)")
                // Round robin: 10 each, give or take the one the table may have gained while the first requests ran.
                #expect((answers.values.max() ?? 0) - (answers.values.min() ?? 0) <= 2, "round robin spreads evenly: \(answers)")
            }
            _ = try await lab.flotilla(["service", "rm", "web"])
        }
    }

    @Test("a container reaches another service by name through its virtual IP", .enabled(if: NetnsLab.available))
    func serviceByName() async throws {
        try await NetnsLab.run { lab, _ in
            try OCIServiceTests.makeBusyboxLayout(lab.work.path + "/image")
            let image = "oci:\(lab.work.path)/image:1.0"
            _ = try await lab.flotilla([
                "service", "create", "web", "--driver", "oci", "--image", image, "--replicas", "2", "--publish", "8080",
                "--command", Self.serve, "--detach"])
            let web = try #require(try await lab.runningTasks("web", count: 2))
            _ = try await lab.flotilla([
                "service", "create", "client", "--driver", "oci", "--image", image, "--replicas", "1",
                "--command", "while true; do echo got=$(wget -qO- http://web:8080/ 2>&1) full=$(wget -qO- http://web.flotilla.internal:8080/ 2>&1); sleep 1; done",
                "--detach"])
            _ = try #require(try await lab.runningTasks("client", count: 1, withAddress: false))
            let ids = web.map(\.id)
            let reached = try await eventually(timeout: .seconds(30)) {
                let logs = (try? await lab.flotilla(["service", "logs", "client"])) ?? ""
                return ids.allSatisfy { logs.contains("got=\($0)") } && logs.contains("full=")
            }
            let logs = (try? await lab.flotilla(["service", "logs", "client"])) ?? ""
            #expect(reached, "the client's log shows both web replicas by name: \(logs.suffix(600))")
            #expect(web.contains { logs.contains("full=\($0.id)") }, "the full name resolves too")
            _ = try await lab.flotilla(["service", "rm", "client"])
            _ = try await lab.flotilla(["service", "rm", "web"])
        }
    }
}
