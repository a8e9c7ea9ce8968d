@testable import ContainerRuntime
import Foundation
import Synchronization
import TestSupport
import Testing

/// Network namespaces standing in for hosts on one switch (a bridge in a namespace of its own), for the node
/// network tests. Every name holds the lab's random id — the lab's namespaces `lab<id>-…` and the node prefixes
/// `n<id><letter>` — so `withNetworkLab` can remove everything the test made, also when it failed, and check
/// that nothing with the id is left on the machine. Nothing touches the machine's own network namespace but
/// the namespace names under /run/netns.
final class NetworkLab: Sendable {
    /// 5 hex digits, fresh per lab.
    let id: String
    let hosts: Int
    private let servers = Mutex<[ChildProcess]>([])
    /// The document roots `serve` made, removed with the lab.
    private let roots = Mutex<[String]>([])

    static var ip: String { OCIRuntimeChoice.which("ip") ?? "/usr/sbin/ip" }

    /// Root, iproute2, nftables and busybox (the HTTP server and client) are needed.
    static var available: Bool {
        getuid() == 0 && OCIRuntimeChoice.which("ip") != nil && OCIRuntimeChoice.which("nft") != nil
            && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
    }

    private init(hosts: Int) {
        id = String(format: "%05x", UInt32.random(in: 0..<0x10_0000))
        self.hosts = hosts
    }

    var switchNamespace: String { "lab\(id)-sw" }
    /// Host `index` (1-based): a namespace with `up0` on the switch.
    func host(_ index: Int) -> String { "lab\(id)-h\(index)" }
    /// Host `index`'s address on the switch (192.168.77.0/24 exists only inside the lab's namespaces).
    func hostAddress(_ index: Int) -> String { "192.168.77.\(10 + index)" }
    /// A node prefix for this lab (at most 7 characters).
    func nodePrefix(_ letter: Character) -> String { "n\(id)\(letter)" }

    /// Runs `ip ARGUMENTS`; its output; throws when it fails.
    @discardableResult
    static func ip(_ arguments: String...) async throws -> String {
        try await run(ip, arguments)
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String]) async throws -> String {
        let result = try await HostProcess.run(executable, arguments)
        guard result.status == 0 else {
            throw ChildProcessError("\(executable) \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.output)")
        }
        return result.output
    }

    private func build() async throws {
        let sw = switchNamespace
        try await Self.ip("netns", "add", sw)
        try await Self.ip("-n", sw, "link", "add", "name", "sw0", "type", "bridge")
        try await Self.ip("-n", sw, "link", "set", "sw0", "up")
        for index in 1...hosts {
            let host = host(index)
            try await Self.ip("netns", "add", host)
            try await Self.ip("-n", sw, "link", "add", "name", "h\(index)", "type", "veth", "peer", "name", "up0", "netns", host)
            try await Self.ip("-n", sw, "link", "set", "h\(index)", "master", "sw0", "up")
            try await Self.ip("-n", host, "address", "add", hostAddress(index) + "/24", "dev", "up0")
            try await Self.ip("-n", host, "link", "set", "up0", "up")
            try await Self.ip("-n", host, "link", "set", "lo", "up")
        }
    }

    // MARK: - Traffic

    /// Serves `text` at http://ADDRESS:PORT/index.html from inside `namespace` (busybox httpd), until the lab ends.
    func serve(in namespace: String, address: String, port: Int = 8080, text: String) throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-www-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try text.write(toFile: root + "/index.html", atomically: true, encoding: .utf8)
        let server = try ChildProcess(Self.ip, ["netns", "exec", namespace, "/bin/busybox", "httpd", "-f", "-p", "\(address):\(port)", "-h", root])
        servers.withLock { $0.append(server) }
        roots.withLock { $0.append(root) }
    }

    /// What http://ADDRESS:PORT/index.html answers from inside `namespace`; nil when the connection fails.
    /// (busybox 1.35's `wget -T` crashes, hence `timeout`.)
    static func fetch(from namespace: String, address: String, port: Int = 8080, timeoutSeconds: Int = 2) async -> String? {
        let result = try? await HostProcess.run(
            ip, ["netns", "exec", namespace, "/usr/bin/timeout", "\(timeoutSeconds)",
                 "/bin/busybox", "wget", "-q", "-O", "-", "http://\(address):\(port)/index.html"])
        return result?.status == 0 ? result?.output : nil
    }

    /// Polls `fetch` for up to 5 s (a first ARP resolution, a server still starting).
    static func eventuallyFetch(from namespace: String, address: String, port: Int = 8080) async throws -> String? {
        let answer = Mutex<String?>(nil)
        _ = try await eventually(timeout: .seconds(5), interval: .milliseconds(50)) {
            let got = await fetch(from: namespace, address: address, port: port, timeoutSeconds: 1)
            answer.withLock { $0 = got }
            return got != nil
        }
        return answer.withLock { $0 }
    }

    // MARK: - Checks

    /// Names that hold `text`: network namespaces, and interfaces and nftables tables of `namespace` (nil: the
    /// machine's own).
    static func leftovers(containing text: String, in namespace: String? = nil) async throws -> [String] {
        let inside = namespace.map { ["-n", $0] } ?? []
        let links = try await run(ip, inside + ["-o", "link", "show"]).split(separator: "\n")
            .compactMap { $0.split(separator: ":").dropFirst().first?.trimmingCharacters(in: .whitespaces) }
        let nft = OCIRuntimeChoice.which("nft") ?? "/usr/sbin/nft"
        let listTables = namespace.map { (ip, ["netns", "exec", $0, nft, "list", "tables"]) } ?? (nft, ["list", "tables"])
        let tables = try await run(listTables.0, listTables.1).split(separator: "\n").map(String.init)
        let namespaces = try await run(ip, ["netns", "list"]).split(separator: "\n").map(String.init)
        return (links.map { "link \($0)" } + tables + namespaces.map { "netns \($0)" }).filter { $0.contains(text) }
    }

    /// The lines of `ip route show proto 241` (the node network's routes) in `namespace`.
    static func ownRoutes(in namespace: String) async throws -> [String] {
        try await ip("-n", namespace, "route", "show", "proto", "241").split(separator: "\n")
            .map { $0.trimmingCharacters(in: .whitespaces) }
    }

    // MARK: - Cleanup

    private func remove() async {
        for server in servers.withLock({ $0 }) { await server.stop(signal: SIGKILL); server.removeOutput() }
        for root in roots.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: root) }
        // Everything of the lab, the node networks' task namespaces included, holds the id.
        let listed = (try? await Self.run(Self.ip, ["netns", "list"])) ?? ""
        for line in listed.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            if name.contains(id) { _ = try? await Self.run(Self.ip, ["netns", "del", name]) }
        }
    }

    /// Builds a lab of `hosts` hosts, runs `body`, and removes the lab whatever happened; then checks that the
    /// machine holds nothing with the lab's id.
    static func with(hosts: Int, _ body: (NetworkLab) async throws -> Void) async throws {
        let lab = NetworkLab(hosts: hosts)
        let outcome: Result<Void, any Error>
        do {
            try await lab.build()
            try await body(lab)
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        await lab.remove()
        #expect(try await leftovers(containing: lab.id) == [], "the machine holds nothing of lab \(lab.id)")
        try outcome.get()
    }
}
