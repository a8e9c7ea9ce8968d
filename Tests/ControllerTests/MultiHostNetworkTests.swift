import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Container networking across hosts, as an operator would run it (see NetnsLab): an oci service's two
/// containers, one per agent host, reach each other at their own addresses through the routes between the hosts.
@Suite("Container networking across hosts (network namespaces)", .serialized)
struct MultiHostNetworkTests {
    @Test("two agents on two hosts: each container reaches the other's at its own address, and the hosts reach both", .enabled(if: NetnsLab.available))
    func crossHostReachability() async throws {
        try await NetnsLab.run { lab, cluster in
            try OCIServiceTests.makeBusyboxLayout(lab.work.path + "/image")
            _ = try await lab.flotilla([
                "service", "create", "web", "--driver", "oci", "--image", "oci:\(lab.work.path)/image:1.0", "--replicas", "2",
                "--max-per-node", "1", "--publish", "8080",
                "--command", "mkdir -p /www && echo $FLOTILLA_TASK_ID > /www/index.html && exec httpd -f -p $PORT -h /www", "--detach"])
            let placed = try #require(try await lab.runningTasks("web", count: 2))
            try #require(Set(placed.map(\.node)).count == 2, "one container per host: \(placed)")
            for (from, to) in [(placed[0], placed[1]), (placed[1], placed[0])] {
                let namespace = NodeNetwork.prefix(for: NodeID(cluster.nodeIDs[from.node] ?? "")) + "-" + from.id
                let crossed = try await Self.fetches(to.address, expecting: to.id, in: namespace)
                #expect(crossed, "\(from.id) on \(from.node) reaches \(to.id) on \(to.node) at \(to.address)")
                let fromHost = try await Self.fetches(to.address, expecting: to.id, in: lab.host(from.node == "n2" ? 2 : 3))
                #expect(fromHost, "host \(from.node) reaches \(to.id) on \(to.node) at \(to.address)")
            }
            _ = try await lab.flotilla(["service", "rm", "web"])
        }
    }

    /// Whether GET http://ADDRESS/ from inside `namespace` answers `expected` within 20 s.
    static func fetches(_ address: String, expecting expected: String, in namespace: String) async throws -> Bool {
        try await eventually(timeout: .seconds(20)) { await NetnsLab.fetch("http://\(address)/", in: namespace) == expected }
    }
}
