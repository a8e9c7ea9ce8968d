import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Hosts as network namespaces on one switch (a bridge in a namespace of its own): a controller on host 1, an
/// agent on each other host, all real processes joined with a token as an operator would. Everything carries a
/// per-run id and is removed afterwards, also when the test fails. Needs root, iproute2, nftables, and for oci
/// services busybox-static, catatonit and crun or runc; CI has them.
struct NetnsLab {
    let id = String(format: "%05x", UInt32.random(in: 0..<0x10_0000))
    /// Hosts 1 (controller) and 2...hosts (agents).
    let hosts: Int
    /// Hosts after those that run nothing: pure clients (hosts + 1...hosts + clients).
    var clients = 0
    let work: TemporaryDirectory
    var switchNamespace: String { "mh\(id)-sw" }
    func host(_ index: Int) -> String { "mh\(id)-h\(index)" }
    func address(_ index: Int) -> String { "192.168.78.\(10 + index)" }
    var credentials: String { work.path + "/controller/admin.creds" }

    static var available: Bool {
        OCIServiceTests.available && OCIRuntimeChoice.which("ip") != nil && OCIRuntimeChoice.which("nft") != nil
    }

    /// The running cluster: its processes, and node name → node id.
    final class Cluster {
        var processes: [ChildProcess] = []
        var nodeIDs: [String: String] = [:]
    }

    /// Builds the lab with a controller on host 1, agents on hosts 2...`hosts` (named n2, n3, ...) and `clients`
    /// hosts that run nothing after them, runs `body`, then stops the agents (they stop their containers), the
    /// controller, and removes every namespace.
    static func run(
        hosts: Int = 3, clients: Int = 0, agentArguments: [String] = [], _ body: (NetnsLab, Cluster) async throws -> Void
    ) async throws {
        let lab = NetnsLab(hosts: hosts, clients: clients, work: try TemporaryDirectory(prefix: "flotilla-netns"))
        let cluster = Cluster()
        defer { lab.removeEverything(cluster) }
        try await lab.build()
        do {
            try await lab.start(cluster, agentArguments: agentArguments)
            try await body(lab, cluster)
        } catch {
            for process in cluster.processes.reversed() { await process.stop() }
            throw error
        }
        // Agents first (they stop their containers and remove their networks), then the controller.
        for process in cluster.processes.reversed() { await process.stop() }
        for node in cluster.nodeIDs.values {
            let prefix = NodeNetwork.prefix(for: NodeID(node))
            let left = ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix(prefix + "-") }
            #expect(left.isEmpty, "the agents removed their task namespaces: \(left)")
        }
    }

    private func build() async throws {
        try await Self.ip(["netns", "add", switchNamespace])
        try await Self.ip(["-n", switchNamespace, "link", "add", "sw0", "type", "bridge"])
        try await Self.ip(["-n", switchNamespace, "link", "set", "sw0", "up"])
        for index in 1...(hosts + clients) {
            let host = host(index)
            try await Self.ip(["netns", "add", host])
            try await Self.ip(["-n", switchNamespace, "link", "add", "h\(index)", "type", "veth", "peer", "name", "up0", "netns", host])
            try await Self.ip(["-n", switchNamespace, "link", "set", "h\(index)", "master", "sw0", "up"])
            try await Self.ip(["-n", host, "address", "add", address(index) + "/24", "dev", "up0"])
            try await Self.ip(["-n", host, "link", "set", "up0", "up"])
            try await Self.ip(["-n", host, "link", "set", "lo", "up"])
        }
    }

    private func start(_ cluster: Cluster, agentArguments: [String]) async throws {
        // nsenter joins only the host's network namespace (`ip netns exec` would also remount /sys, hiding the
        // cgroup file systems the runtimes need).
        let controller = try ChildProcess("/usr/bin/nsenter", [
            "--net=/run/netns/\(host(1))", "--", try FlotillaBinaries.path("flotilla-controller"),
            "--data-dir", work.path + "/controller", "--listen", "\(address(1)):7400", "--init"])
        cluster.processes.append(controller)
        #expect(try await eventually(timeout: .seconds(60)) { controller.standardError.contains("listen=") })
        let token = try await flotilla(["token", "create", "--role", "agent", "--quiet"]).trimmingCharacters(in: .whitespacesAndNewlines)
        for index in 2...hosts {
            cluster.processes.append(try ChildProcess("/usr/bin/nsenter", [
                "--net=/run/netns/\(host(index))", "--", try FlotillaBinaries.path("flotilla-agent"),
                "--data-dir", work.path + "/agent\(index)", "--controller", "\(address(1)):7400", "--token", token,
                "--name", "n\(index)", "--advertise-ip", address(index), "--run-dir", work.path + "/run\(index)",
                // A test's end stops what still runs (a task being drained when the agent exits would otherwise
                // be left for the next agent process, which never comes).
                "--stop-tasks-on-exit"] + agentArguments))
        }
        let ready = try await eventually(timeout: .seconds(60)) {
            let nodes = Self.json((try? await flotilla(["node", "ls", "--output", "json"])) ?? "")
            return nodes.count == hosts - 1 && nodes.allSatisfy { $0["status"] as? String == "ready" }
        }
        try #require(ready, "agents: \(cluster.processes.dropFirst().map(\.standardError))")
        let nodes = Self.json(try await flotilla(["node", "ls", "--output", "json"]))
        cluster.nodeIDs = Dictionary(uniqueKeysWithValues: nodes.compactMap { node in
            (node["name"] as? String).flatMap { name in (node["id"] as? String).map { (name, $0) } }
        })
    }

    private func removeEverything(_ cluster: Cluster) {
        for index in 0...(hosts + clients) {
            let namespace = index == 0 ? switchNamespace : host(index)
            _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", namespace]).waitUntilExit()
        }
        for node in cluster.nodeIDs.values {
            let prefix = NodeNetwork.prefix(for: NodeID(node)) + "-"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? [] where name.hasPrefix(prefix) {
                _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", name]).waitUntilExit()
            }
        }
        OCIServiceTests.removeCgroupParents()
    }

    @discardableResult
    static func ip(_ arguments: [String]) async throws -> String {
        let result = try await ChildProcess.run("/usr/sbin/ip", arguments)
        guard result.status == 0 else { throw ChildProcessError("ip \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result.stdout
    }

    /// Runs `flotilla ARGUMENTS` on host 1, against its controller (killed if it takes longer than `timeout`).
    func flotilla(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> String {
        let result = try await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", host(1), try FlotillaBinaries.path("flotilla"),
                             "--controller", "\(address(1)):7400", "--credentials", credentials] + arguments, timeout: timeout)
        guard result.status == 0 else { throw ChildProcessError("flotilla \(arguments.joined(separator: " ")): \(result.stderr)") }
        return result.stdout
    }

    static func json(_ text: String) -> [[String: Any]] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]]) ?? []
    }

    /// The service's tasks meant to run, once `count` of them run with an address (nil if not within `timeout`).
    /// Tasks of services without ports have no address and are not asked for one.
    func runningTasks(_ service: String, count: Int, withAddress: Bool = true, timeout: Duration = .seconds(60))
        async throws -> [(id: String, node: String, address: String)]?
    {
        let running = try await eventually(timeout: timeout) {
            let (tasks, placed) = await placement(service, withAddress: withAddress)
            return placed.count == count && tasks == count
        }
        return running ? await placement(service, withAddress: withAddress).placed : nil
    }

    /// How many of the service's tasks are meant to run, and those running with an address.
    private func placement(_ service: String, withAddress: Bool) async -> (tasks: Int, placed: [(id: String, node: String, address: String)]) {
        let tasks = Self.json((try? await flotilla(["service", "ps", service, "--output", "json"])) ?? "")
            .filter { $0["desired"] as? String == "running" }
        let placed = tasks.compactMap { task -> (id: String, node: String, address: String)? in
            guard task["current"] as? String == "running", let id = task["id"] as? String, let node = task["node"] as? String,
                  let address = task["address"] as? String, !withAddress || address.hasPrefix("10.240.") else { return nil }
            return (id, node, address)
        }
        return (tasks.count, placed)
    }

    /// GET http://URL from inside `namespace` with busybox wget (5 s limit); the body, or nil.
    static func fetch(_ url: String, in namespace: String) async -> String? {
        let result = try? await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", namespace, "/usr/bin/timeout", "5", "/bin/busybox", "wget", "-qO-", url])
        guard result?.status == 0 else { return nil }
        return result?.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
