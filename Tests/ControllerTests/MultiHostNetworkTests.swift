import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Container networking across hosts, as an operator would run it: three network namespaces stand in for hosts
/// on one switch (a bridge in a namespace of its own); a controller runs on the first, an agent on each of the
/// others, all as processes joined with a token. An oci service's two containers, one per agent host, reach
/// each other at their own addresses through the routes between the hosts. Needs root, iproute2, nftables,
/// busybox-static, catatonit and crun or runc; CI has them.
@Suite("Container networking across hosts (network namespaces)", .serialized)
struct MultiHostNetworkTests {
    static var available: Bool {
        OCIServiceTests.available && OCIRuntimeChoice.which("ip") != nil && OCIRuntimeChoice.which("nft") != nil
    }

    /// Names carry a per-run id, so runs never collide and everything can be removed by name.
    struct Lab {
        let id = String(format: "%05x", UInt32.random(in: 0..<0x10_0000))
        var switchNamespace: String { "mh\(id)-sw" }
        func host(_ index: Int) -> String { "mh\(id)-h\(index)" }
        func address(_ index: Int) -> String { "192.168.78.\(10 + index)" }
    }

    @discardableResult
    static func ip(_ arguments: [String]) async throws -> String {
        let result = try await ChildProcess.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else { throw ChildProcessError("ip \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result.stdout
    }

    /// Runs `flotilla ARGUMENTS` on the first host, against its controller.
    static func flotilla(_ lab: Lab, credentials: String, _ arguments: [String]) async throws -> String {
        let result = try await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", lab.host(1), try FlotillaBinaries.path("flotilla"),
                             "--controller", "\(lab.address(1)):7400", "--credentials", credentials] + arguments)
        guard result.status == 0 else { throw ChildProcessError("flotilla \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result.stdout
    }

    static func json(_ text: String) -> [[String: Any]] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]) ?? []
    }

    @Test("two agents on two hosts: each container reaches the other's at its own address, and the hosts reach both", .enabled(if: available))
    func crossHostReachability() async throws {
        let lab = Lab()
        let work = try TemporaryDirectory(prefix: "flotilla-multihost")
        var processes: [ChildProcess] = []
        var nodeIDs: [String] = []
        defer {
            // Whatever the outcome: the namespaces (and so the hosts' bridges), task namespaces, cgroups.
            for namespace in [lab.switchNamespace, lab.host(1), lab.host(2), lab.host(3)] {
                _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", namespace]).waitUntilExit()
            }
            for node in nodeIDs {
                let prefix = NodeNetwork.prefix(for: NodeID(node)) + "-"
                for name in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where name.hasPrefix(prefix) {
                    _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", name]).waitUntilExit()
                }
            }
            OCIServiceTests.removeCgroupParents()
        }
        try await Self.ip(["netns", "add", lab.switchNamespace])
        try await Self.ip(["-n", lab.switchNamespace, "link", "add", "sw0", "type", "bridge"])
        try await Self.ip(["-n", lab.switchNamespace, "link", "set", "sw0", "up"])
        for index in 1...3 {
            let host = lab.host(index)
            try await Self.ip(["netns", "add", host])
            try await Self.ip(["-n", lab.switchNamespace, "link", "add", "h\(index)", "type", "veth", "peer", "name", "up0", "netns", host])
            try await Self.ip(["-n", lab.switchNamespace, "link", "set", "h\(index)", "master", "sw0", "up"])
            try await Self.ip(["-n", host, "address", "add", lab.address(index) + "/24", "dev", "up0"])
            try await Self.ip(["-n", host, "link", "set", "up0", "up"])
            try await Self.ip(["-n", host, "link", "set", "lo", "up"])
        }
        do {
            // nsenter joins only the host's network namespace (`ip netns exec` would also remount /sys, hiding
            // the cgroup file systems the runtimes need).
            let controller = try ChildProcess("/usr/bin/nsenter", [
                "--net=/run/netns/\(lab.host(1))", "--", try FlotillaBinaries.path("flotilla-controller"),
                "--data-dir", work.path + "/controller", "--listen", "\(lab.address(1)):7400", "--init"])
            processes.append(controller)
            let credentials = work.path + "/controller/admin.creds"
            #expect(try await eventually(timeout: .seconds(60)) { controller.standardError.contains("listen=") })
            let token = try await Self.flotilla(lab, credentials: credentials, ["token", "create", "--role", "agent", "--quiet"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            for index in 2...3 {
                processes.append(try ChildProcess("/usr/bin/nsenter", [
                    "--net=/run/netns/\(lab.host(index))", "--", try FlotillaBinaries.path("flotilla-agent"),
                    "--data-dir", work.path + "/agent\(index)", "--controller", "\(lab.address(1)):7400", "--token", token,
                    "--name", "n\(index)", "--advertise-ip", lab.address(index), "--run-dir", work.path + "/run\(index)"]))
            }
            let ready = try await eventually(timeout: .seconds(60)) {
                let nodes = Self.json((try? await Self.flotilla(lab, credentials: credentials, ["node", "ls", "--output", "json"])) ?? "")
                return nodes.count == 2 && nodes.allSatisfy { $0["status"] as? String == "ready" }
            }
            try #require(ready, "agents: \(processes.dropFirst().map(\.standardError))")
            let nodes = Self.json(try await Self.flotilla(lab, credentials: credentials, ["node", "ls", "--output", "json"]))
            let idOfNode = Dictionary(uniqueKeysWithValues: nodes.compactMap { node in
                (node["name"] as? String).flatMap { name in (node["id"] as? String).map { (name, $0) } }
            })
            nodeIDs = Array(idOfNode.values)

            try OCIServiceTests.makeBusyboxLayout(work.path + "/image")
            _ = try await Self.flotilla(lab, credentials: credentials, [
                "service", "create", "web", "--driver", "oci", "--image", "oci:\(work.path)/image:1.0", "--replicas", "2",
                "--max-per-node", "1", "--publish", "8080",
                "--command", "mkdir -p /www && echo $FLOTILLA_TASK_ID > /www/index.html && exec httpd -f -p $PORT -h /www", "--detach"])
            let running = try await eventually(timeout: .seconds(60)) {
                let tasks = Self.json((try? await Self.flotilla(lab, credentials: credentials, ["service", "ps", "web", "--output", "json"])) ?? "")
                    .filter { $0["desired"] as? String == "running" }
                return tasks.count == 2 && tasks.allSatisfy { $0["current"] as? String == "running" && ($0["address"] as? String ?? "").hasPrefix("10.240.") }
            }
            let tasks = Self.json(try await Self.flotilla(lab, credentials: credentials, ["service", "ps", "web", "--output", "json"]))
                .filter { $0["desired"] as? String == "running" }
            try #require(running, "tasks: \(tasks)")
            let placed = tasks.compactMap { task -> (id: String, node: String, address: String)? in
                guard let id = task["id"] as? String, let node = task["node"] as? String, let address = task["address"] as? String else { return nil }
                return (id, node, address)
            }
            try #require(Set(placed.map(\.node)).count == 2, "one container per host: \(placed)")
            for (from, to) in [(placed[0], placed[1]), (placed[1], placed[0])] {
                let namespace = NodeNetwork.prefix(for: NodeID(idOfNode[from.node] ?? "")) + "-" + from.id
                let crossed = try await Self.fetches(to.address, expecting: to.id, in: namespace)
                #expect(crossed, "\(from.id) on \(from.node) reaches \(to.id) on \(to.node) at \(to.address)")
                let fromHost = try await Self.fetches(to.address, expecting: to.id, in: lab.host(from.node == "n2" ? 2 : 3))
                #expect(fromHost, "host \(from.node) reaches \(to.id) on \(to.node) at \(to.address)")
            }
            _ = try await Self.flotilla(lab, credentials: credentials, ["service", "rm", "web"])
        } catch {
            for process in processes.reversed() { await process.stop() }
            throw error
        }
        // Agents first (they stop their containers and remove their networks), then the controller.
        for process in processes.reversed() { await process.stop() }
        for node in nodeIDs {
            let prefix = NodeNetwork.prefix(for: NodeID(node))
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix(prefix + "-") }
            #expect(left.isEmpty, "the agents removed their task namespaces: \(left)")
        }
    }

    /// Whether GET http://ADDRESS/ from inside `namespace` answers `expected` within 20 s.
    static func fetches(_ address: String, expecting expected: String, in namespace: String) async throws -> Bool {
        try await eventually(timeout: .seconds(20)) {
            let result = try? await ChildProcess.run(
                "/usr/sbin/ip", ["netns", "exec", namespace, "/usr/bin/timeout", "5", "/bin/busybox", "wget", "-qO-", "http://\(address)/"])
            return result?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected
        }
    }
}
