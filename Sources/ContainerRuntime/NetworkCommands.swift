import ClusterModel
import Foundation

/// Runs iproute2's `ip` and `nft` for `NodeNetwork` — on the node's host side (the agent's own network
/// namespace, or a named one) or inside a task's namespace — and turns a failure into an error that says what
/// failed and what to do about it.
struct NetworkCommands: Sendable {
    /// One command line: an absolute executable path and its arguments.
    struct Invocation: Sendable {
        let executable: String
        let arguments: [String]
    }

    let ipPath: String
    let nftPath: String
    /// Where the host side lives; nil: this process's own network namespace.
    let hostNamespace: String?

    init(hostNamespace: String?) throws(NodeNetworkError) {
        guard let ip = OCIRuntimeChoice.which("ip") else {
            throw NodeNetworkError(.toolMissing, "the node network needs iproute2's ip, which is not installed: install iproute2")
        }
        guard let nft = OCIRuntimeChoice.which("nft") else {
            throw NodeNetworkError(.toolMissing, "the node network needs nft, which is not installed: install nftables")
        }
        ipPath = ip
        nftPath = nft
        self.hostNamespace = hostNamespace
    }

    // MARK: - Command lines

    /// `ip ARGUMENTS` in this process's network namespace (also how `-n <task namespace>` commands run).
    func ip(_ arguments: [String]) -> Invocation { Invocation(executable: ipPath, arguments: arguments) }

    /// `ip ARGUMENTS` on the host side.
    func hostIP(_ arguments: [String]) -> Invocation {
        ip(hostNamespace.map { ["-n", $0] + arguments } ?? arguments)
    }

    /// Any program on the host side (`ip netns exec` when the host side is a named namespace).
    func hostTool(_ executable: String, _ arguments: [String]) -> Invocation {
        guard let hostNamespace else { return Invocation(executable: executable, arguments: arguments) }
        return ip(["netns", "exec", hostNamespace, executable] + arguments)
    }

    // MARK: - Running

    /// What `ip` prints when the thing to remove is not there (a missing device, namespace, or route).
    static let absence = ["Cannot find device", "No such file or directory", "No such process", "does not exist"]

    /// Runs `invocation`; its output. On failure an error "could not PURPOSE: OUTPUT", followed by what to do
    /// when the output names a cause in `hint` (or lacks privilege). With `toleratingAbsence`, a failure that
    /// says the object is gone counts as success.
    @discardableResult
    func run(
        _ purpose: String, _ invocation: Invocation, toleratingAbsence: Bool = false, hint: [String: String] = [:]
    ) async throws(NodeNetworkError) -> String {
        let result: (status: Int32, output: String)
        do {
            result = try await HostProcess.run(invocation.executable, invocation.arguments)
        } catch {
            throw NodeNetworkError(.toolMissing, "could not \(purpose): \(error)")
        }
        guard result.status != 0 else { return result.output }
        if toleratingAbsence, Self.absence.contains(where: result.output.contains) { return result.output }
        let said = result.output.isEmpty ? "exit status \(result.status)" : result.output
        if said.contains("Operation not permitted") || said.contains("Permission denied") {
            throw NodeNetworkError(.permissionDenied, "could not \(purpose): \(said) — the agent needs root (CAP_NET_ADMIN)")
        }
        let advice = hint.first { said.contains($0.key) }.map { " — \($0.value)" } ?? ""
        throw NodeNetworkError(.commandFailed, "could not \(purpose): \(said)\(advice)")
    }

    func ip(_ purpose: String, _ arguments: [String], toleratingAbsence: Bool = false) async throws(NodeNetworkError) {
        try await run(purpose, ip(arguments), toleratingAbsence: toleratingAbsence)
    }

    func hostIP(
        _ purpose: String, _ arguments: [String], toleratingAbsence: Bool = false, hint: [String: String] = [:]
    ) async throws(NodeNetworkError) {
        try await run(purpose, hostIP(arguments), toleratingAbsence: toleratingAbsence, hint: hint)
    }

    func host(_ purpose: String, _ executable: String, _ arguments: [String]) async throws(NodeNetworkError) {
        try await run(purpose, hostTool(executable, arguments))
    }

    /// Whether `invocation` exits 0 (a probe: "does this device exist?").
    func succeeds(_ invocation: Invocation) async -> Bool {
        (try? await HostProcess.run(invocation.executable, invocation.arguments).status) == 0
    }

    /// Runs a `-j` command and decodes its JSON (no output at all is an empty list).
    func json<T: Decodable>(_ purpose: String, _ invocation: Invocation) async throws(NodeNetworkError) -> [T] {
        let output = try await run(purpose, invocation)
        guard let start = output.firstIndex(of: "[") else { return [] }
        do {
            return try JSONDecoder().decode([T].self, from: Data(output[start...].utf8))
        } catch {
            throw NodeNetworkError(.commandFailed, "could not \(purpose): unexpected output from ip (\(error)): \(output.prefix(200))")
        }
    }

    /// Runs several `ip` commands (argument lists) in one process, `ip -batch`, in `namespace` (nil: this
    /// process's); stops at the first that fails, which the error names.
    func ipBatch(_ purpose: String, _ commands: [[String]], namespace: String?) async throws(NodeNetworkError) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-ip-\(UUID().uuidString).batch").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard FileManager.default.createFile(atPath: file, contents: Data(commands.map { $0.joined(separator: " ") + "\n" }.joined().utf8)) else {
            throw NodeNetworkError(.commandFailed, "could not \(purpose): cannot write \(file)")
        }
        try await run(purpose, ip((namespace.map { ["-n", $0] } ?? []) + ["-batch", file]))
    }

    /// Replaces the host side's nftables table atomically with `ruleset` (`nft -f`).
    func nft(_ purpose: String, _ ruleset: String) async throws(NodeNetworkError) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-nft-\(UUID().uuidString).nft").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard FileManager.default.createFile(atPath: file, contents: Data(ruleset.utf8)) else {
            throw NodeNetworkError(.commandFailed, "could not \(purpose): cannot write \(file)")
        }
        try await run(purpose, hostTool(nftPath, ["-f", file]))
    }

    // MARK: - Addresses

    /// The IPv4 addresses of `device` in `namespace` (nil: this process's).
    func addresses(device: String, namespace: String?) async throws(NodeNetworkError) -> [(address: IPv4Address, prefixLength: Int)] {
        let arguments = (namespace.map { ["-n", $0] } ?? []) + ["-j", "-4", "address", "show", "dev", device]
        let interfaces: [AddressList] = try await json("list the addresses of \(device)", ip(arguments))
        return interfaces.flatMap(\.addr_info).compactMap { info in
            guard let local = info.local.flatMap(IPv4Address.init), let length = info.prefixlen else { return nil }
            return (local, length)
        }
    }

    /// Makes `address/prefixLength` the only IPv4 address of `device` in `namespace` (nil: this process's):
    /// others are removed, a present one is kept as it is.
    func assignOnly(_ address: IPv4Address, prefixLength: Int, device: String, namespace: String?) async throws(NodeNetworkError) {
        let inNamespace = namespace.map { ["-n", $0] } ?? []
        var present = false
        for existing in try await addresses(device: device, namespace: namespace) {
            if existing.address == address && existing.prefixLength == prefixLength {
                present = true
            } else {
                try await ip(
                    "remove address \(existing.address)/\(existing.prefixLength) from \(device)",
                    inNamespace + ["address", "del", "\(existing.address)/\(existing.prefixLength)", "dev", device],
                    toleratingAbsence: true)
            }
        }
        if !present {
            try await ip("give \(device) address \(address)/\(prefixLength)", inNamespace + ["address", "replace", "\(address)/\(prefixLength)", "dev", device])
        }
    }

    // MARK: - What `ip -j` prints (the fields read)

    struct Link: Decodable {
        let ifname: String
        let ifalias: String?
    }

    struct Namespace: Decodable {
        let name: String
    }

    struct RouteEntry: Decodable {
        let dst: String
        let gateway: String?
        let prefsrc: String?
    }

    struct AddressList: Decodable {
        let addr_info: [AddressInfo]
    }

    struct AddressInfo: Decodable {
        let local: String?
        let prefixlen: Int?
    }
}
