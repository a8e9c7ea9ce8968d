import ClusterModel
import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Hosts as network namespaces on one switch (a bridge in a namespace of its own): controllers on hosts
/// 1...controllers, an agent on each other host, all real processes joined with tokens as an operator would.
/// Everything carries a per-run id and is removed afterwards, also when the test fails. Needs root, iproute2,
/// nftables, and for oci services busybox-static, catatonit and crun or runc; CI has them.
struct NetnsLab {
    let id = String(format: "%05x", UInt32.random(in: 0..<0x10_0000))
    /// Hosts 1...controllers (controllers) and controllers + 1...hosts (agents).
    let hosts: Int
    /// Hosts after those that run nothing: pure clients (hosts + 1...hosts + clients).
    var clients = 0
    /// How many of the first hosts run a controller (1, 3 or 5).
    var controllers = 1
    let work: TemporaryDirectory
    var switchNamespace: String { "mh\(id)-sw" }
    func host(_ index: Int) -> String { "mh\(id)-h\(index)" }
    /// The lab's /24: random per run, so labs attached to the root namespace (`attachRoot`) do not collide.
    let subnet = Int.random(in: 100...199)
    func address(_ index: Int) -> String { "192.168.\(subnet).\(10 + index)" }
    /// The root namespace's address on the switch when the lab is attached (the test process itself is a host
    /// then: in-process clients reach every host).
    var rootAddress: String { "192.168.\(subnet).250" }
    var rootLink: String { "mh\(id)-r" }
    /// Host `index`'s controller's data directory (the founder's on host 1 holds admin.creds).
    func controllerDirectory(_ index: Int) -> String { work.path + (index == 1 ? "/controller" : "/controller\(index)") }
    var credentials: String { controllerDirectory(1) + "/admin.creds" }
    /// Every controller's address, for `--controller`.
    var controllerAddresses: [String] { (1...controllers).map { "\(address($0)):7400" } }
    /// The agent hosts.
    var agentHosts: ClosedRange<Int> { (controllers + 1)...hosts }

    static var available: Bool {
        OCIServiceTests.available && OCIRuntimeChoice.which("ip") != nil && OCIRuntimeChoice.which("nft") != nil
    }

    /// The running cluster: its processes (and each host's, with how to start it again), and node name → node id.
    final class Cluster {
        var processes: [ChildProcess] = []
        var nodeIDs: [String: String] = [:]
        /// Host index → its process and the arguments that restart it (no --init, --join or --token: its data
        /// directory has its identity).
        var byHost: [Int: (process: ChildProcess, restart: [String])] = [:]
    }

    /// Builds the lab with a controller on host 1, agents on hosts 2...`hosts` (named n2, n3, ...) and `clients`
    /// hosts that run nothing after them, runs `body`, then stops the agents (they stop their containers), the
    /// controller, and removes every namespace.
    static func run(
        hosts: Int = 3, clients: Int = 0, controllers: Int = 1, attachRoot: Bool = false, agentArguments: [String] = [],
        _ body: (NetnsLab, Cluster) async throws -> Void
    ) async throws {
        let lab = NetnsLab(hosts: hosts, clients: clients, controllers: controllers, work: try TemporaryDirectory(prefix: "flotilla-netns"))
        let cluster = Cluster()
        defer { lab.removeEverything(cluster) }
        try await lab.build()
        if attachRoot { try await lab.attachRootNamespace() }
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

    /// Starts `arguments` in host `index`'s network namespace and records it as that host's process. nsenter
    /// joins only the network namespace (`ip netns exec` would also remount /sys, hiding the cgroup file systems
    /// the runtimes need), and execs the program: the process's pid is the program's.
    @discardableResult
    func launch(_ cluster: Cluster, host index: Int, _ arguments: [String], restart: [String]) throws -> ChildProcess {
        let process = try ChildProcess("/usr/bin/nsenter", ["--net=/run/netns/\(host(index))", "--"] + arguments)
        cluster.processes.append(process)
        cluster.byHost[index] = (process, restart)
        return process
    }

    /// A port on the switch for the root namespace (the test process), at `rootAddress`.
    private func attachRootNamespace() async throws {
        try await Self.ip(["link", "add", rootLink, "type", "veth", "peer", "name", "r0", "netns", switchNamespace])
        try await Self.ip(["-n", switchNamespace, "link", "set", "r0", "master", "sw0", "up"])
        try await Self.ip(["address", "add", rootAddress + "/24", "dev", rootLink])
        try await Self.ip(["link", "set", rootLink, "up"])
    }

    private func start(_ cluster: Cluster, agentArguments: [String]) async throws {
        let controllerBinary = try FlotillaBinaries.path("flotilla-controller")
        let founderArguments = [controllerBinary, "--data-dir", controllerDirectory(1), "--listen", "\(address(1)):7400"]
        let founder = try launch(cluster, host: 1, founderArguments + ["--init"], restart: founderArguments)
        #expect(try await eventually(timeout: .seconds(60)) { founder.standardError.contains("listen=") })
        if controllers > 1 {
            let token = try await flotilla(["token", "create", "--role", "controller", "--uses", "\(controllers - 1)", "--quiet"])
                .trimmingCharacters(in: .whitespacesAndNewlines)
            for index in 2...controllers {
                let arguments = [controllerBinary, "--data-dir", controllerDirectory(index), "--listen", "\(address(index)):7400"]
                try launch(cluster, host: index, arguments + ["--join", "\(address(1)):7400", "--token", token], restart: arguments)
            }
            let formed = try await eventually(timeout: .seconds(90)) {
                let list = (try? JSONSerialization.jsonObject(with: Data(((try? await flotilla(["controller", "ls", "--output", "json"])) ?? "").utf8))
                    as? [String: Any])?["controllers"] as? [[String: Any]] ?? []
                return list.count == controllers && list.allSatisfy { $0["membership"] as? String == "voter" }
            }
            try #require(formed, "controllers: \(cluster.processes.map { $0.standardError.suffix(400) })")
        }
        let token = try await flotilla(["token", "create", "--role", "agent", "--quiet"]).trimmingCharacters(in: .whitespacesAndNewlines)
        for index in agentHosts {
            let arguments = [
                try FlotillaBinaries.path("flotilla-agent"), "--data-dir", work.path + "/agent\(index)",
                "--name", "n\(index)", "--advertise-ip", address(index), "--run-dir", work.path + "/run\(index)",
                // A test's end stops what still runs (a task being drained when the agent exits would otherwise
                // be left for the next agent process, which never comes).
                "--stop-tasks-on-exit"] + agentArguments
            try launch(cluster, host: index, arguments + ["--controller", controllerAddresses.joined(separator: ","), "--token", token],
                       restart: arguments)
        }
        let ready = try await eventually(timeout: .seconds(60)) {
            let nodes = Self.json((try? await flotilla(["node", "ls", "--output", "json"])) ?? "")
            return nodes.count == agentHosts.count && nodes.allSatisfy { $0["status"] as? String == "ready" }
        }
        try #require(ready, "agents: \(cluster.processes.dropFirst().map(\.standardError))")
        let nodes = Self.json(try await flotilla(["node", "ls", "--output", "json"]))
        cluster.nodeIDs = Dictionary(uniqueKeysWithValues: nodes.compactMap { node in
            (node["name"] as? String).flatMap { name in (node["id"] as? String).map { (name, $0) } }
        })
    }

    private func removeEverything(_ cluster: Cluster) {
        // The root port goes with the switch namespace; deleted first in case the switch is already gone.
        if FileManager.default.fileExists(atPath: "/sys/class/net/" + rootLink) {
            _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["link", "delete", rootLink]).waitUntilExit()
        }
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

    /// The host the CLI runs on: host 1, or with several controllers the first client host when there is one
    /// (it is never faulted, and reaches every controller).
    var adminHost: Int { controllers > 1 && clients > 0 ? hosts + 1 : 1 }

    /// Runs `flotilla ARGUMENTS` on the admin host against the controllers (killed if it takes longer than `timeout`).
    func flotilla(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> String {
        let result = try await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", host(adminHost), try FlotillaBinaries.path("flotilla"),
                             "--controller", controllerAddresses.joined(separator: ","), "--credentials", credentials] + arguments,
            timeout: timeout)
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
