import Foundation
import TestSupport
import Testing

/// `flotilla events --follow` and every process's /metrics in a cluster of real processes (hosts as network
/// namespaces, see NetnsLab).
@Suite("Cluster events across hosts (network namespaces)", .serialized)
struct EventsClusterTests {
    @Test("every process's /metrics parses; events --follow shows a node lost and its task rescheduled on another node", .enabled(if: NetnsLab.available))
    func nodeLossAndRescheduling() async throws {
        try await NetnsLab.run { lab, cluster in
            try OCIServiceTests.makeBusyboxLayout(lab.work.path + "/image")
            _ = try await lab.flotilla([
                "service", "create", "web", "--driver", "oci", "--image", "oci:\(lab.work.path)/image:1.0", "--replicas", "2",
                "--publish", "9090:8080", "--command", LoadBalancerClusterTests.serve, "--detach"])
            let placed = try #require(try await lab.runningTasks("web", count: 2))
            try #require(Set(placed.map(\.node)).count == 2, "one replica per host: \(placed)")
            let lost = try #require(placed.first { $0.node == "n3" })
            try await Self.scrapeEveryProcess(lab)

            let follow = try ChildProcess("/usr/sbin/ip", [
                "netns", "exec", lab.host(1), try FlotillaBinaries.path("flotilla"), "--controller", "\(lab.address(1)):7400",
                "--credentials", lab.credentials, "events", "--follow", "--output", "json"])
            defer { follow.removeOutput() }
            // The history comes first: the service and its tasks.
            let history = try await eventually(timeout: .seconds(20)) { follow.standardOutput.contains("\"task.started\"") }
            #expect(history, "the stream begins with the history: \(follow.standardOutput.prefix(400)) \(follow.standardError)")

            try await lab.cut(host: 3)
            let rescheduled = try await eventually(timeout: .seconds(60)) {
                let events = Self.events(follow.standardOutput)
                return events.contains { $0["type"] as? String == "node.down" && $0["node"] as? String == "n3" }
                    && events.contains { $0["type"] as? String == "task.assigned" && $0["node"] as? String == "n2" && $0["task"] as? String != placed.first { $0.node == "n2" }?.id }
            }
            try await lab.heal(host: 3)
            _ = try await lab.runningTasks("web", count: 2)
            await follow.stop(signal: SIGINT)
            let events = Self.events(follow.standardOutput)
            for event in events.suffix(12) {
                print("event:", event["type"] ?? "", event["node"] ?? "", event["service"] ?? "", event["message"] ?? "")
            }
            #expect(rescheduled, "node.down for n3 and a task.assigned on n2 followed: \(events.map { $0["type"] ?? "" })")
            let down = events.firstIndex { $0["type"] as? String == "node.down" && $0["node"] as? String == "n3" }
            let moved = events.lastIndex { $0["type"] as? String == "task.assigned" && $0["node"] as? String == "n2" }
            if let down, let moved { #expect(down < moved, "the rescheduling follows the node loss") }
            #expect(events.contains { $0["type"] as? String == "task.stopped" && $0["task"] as? String == lost.id }
                    || events.contains { $0["task"] as? String == lost.id && ($0["type"] as? String ?? "").hasPrefix("task.") },
                    "the lost node's task appears in the stream")
            // Ids count up without gaps.
            let ids = events.compactMap { ($0["id"] as? Int) ?? Int(($0["id"] as? String) ?? "") }
            #expect(ids == Array(ids.sorted()) && Set(ids).count == ids.count, "ids ascend: \(ids)")
            _ = try await lab.flotilla(["service", "rm", "web"])
            _ = cluster
        }
    }

    /// `GET /metrics` of every process of the lab, from inside its host (each serves on its loopback: the
    /// controller on 9464, agents on 9465), parsed strictly as Prometheus text.
    static func scrapeEveryProcess(_ lab: NetnsLab) async throws {
        for host in 1...lab.hosts {
            let controller = host <= lab.controllers
            let url = "http://127.0.0.1:\(controller ? 9464 : 9465)/metrics"
            let text = try #require(await NetnsLab.fetch(url, in: lab.host(host)), "host \(host) serves \(url)")
            let parsed = try PrometheusExposition(parsing: text + "\n")
            if controller {
                #expect(parsed.value("flotilla_raft_is_leader") == 1, "host \(host): the controller leads")
                #expect(parsed.families["flotilla_tasks"]?.type == "gauge")
            } else {
                #expect((parsed.value("flotilla_container_starts_total") ?? 0) >= 1, "host \(host): the agent started its replica")
                #expect(parsed.families["flotilla_lb_requests_total"]?.type == "counter", "host \(host): the balancer's families")
            }
        }
    }

    /// The JSON lines of `events --output json`.
    static func events(_ output: String) -> [[String: Any]] {
        output.split(separator: "\n").compactMap { line in
            try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        }
    }
}
