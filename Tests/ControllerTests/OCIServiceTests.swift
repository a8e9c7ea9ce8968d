import AdminClient
import Agent
import ClusterModel
import ContainerRuntime
import Controller
import Foundation
import Logging
import Messages
import PKI
import TestSupport
import Transport
import Wire
import Testing

/// A service with `--driver oci` end to end: the leader places it, the agents' workers run real containers from
/// an OCI image layout through crun or runc, and removing the service stops them. Needs root, python3 (to write
/// the image), busybox-static, catatonit and crun or runc; CI has them.
@Suite("OCI services on a live controller", .serialized)
struct OCIServiceTests {
    static var available: Bool {
        getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
            && FileManager.default.isExecutableFile(atPath: "/usr/bin/catatonit")
            && (OCIRuntimeChoice.which("crun") != nil || OCIRuntimeChoice.which("runc") != nil)
    }

    /// An OCI image layout at `path`, tagged "1.0": busybox with sh, sleep, httpd and wget.
    static func makeBusyboxLayout(_ path: String) throws {
        let root = path + ".root"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try writeBusyboxRoot(root, applets: ["sh", "sleep", "httpd", "mkdir", "echo", "wget", "touch", "rm"])
        try writeOCILayout(path, rootfs: root)
    }

    /// Whether GET http://ADDRESS/ answers `expected` within 10 s.
    static func answers(_ address: String, with expected: String, inNamespace namespace: String? = nil) async throws -> Bool {
        try await eventually { (try? get(address, inNamespace: namespace)) == expected }
    }

    /// The body of GET http://ADDRESS/ (trimmed), fetched with busybox wget, from this host or inside a named
    /// network namespace.
    static func get(_ address: String, inNamespace namespace: String? = nil) throws -> String {
        let process = Process()
        let output = Pipe()
        let fetch = ["/usr/bin/timeout", "5", "/bin/busybox", "wget", "-qO-", "http://\(address)/"]
        process.executableURL = URL(fileURLWithPath: namespace == nil ? fetch[0] : "/usr/sbin/ip")
        process.arguments = namespace.map { ["netns", "exec", $0] + fetch } ?? Array(fetch.dropFirst())
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("an oci service runs containers on the agents, each on its own address reachable from the other node, and stops them when removed", .enabled(if: available))
    func ociService() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-oci-service")
        try Self.makeBusyboxLayout(work.path + "/image")
        try await InProcessAgents.withCluster(work.path + "/controller", agents: ["n1", "n2"], runtimes: Self.ociRuntimes(work.path)) { admin, agents in
            var spec = Flotilla_V1_ServiceSpec()
            spec.name = "boxes"
            spec.driver = "oci"
            spec.image = "oci:\(work.path)/image:1.0"
            spec.command = "exec sleep 300"
            spec.replicas = 3
            spec.resources.memoryLimitBytes = 64 << 20
            _ = try await admin.serviceCreate(spec)
            @Sendable func processes() async -> Int { await agents.runningCount() }
            let running3 = try await eventually(timeout: .seconds(30)) {
                let tasks = ((try? await admin.serviceInspect("boxes").tasks) ?? []).filter { $0.desiredState == .running }
                let containers = await processes()
                return tasks.count == 3 && tasks.allSatisfy { $0.state == .running } && containers == 3
            }
            let states = ((try? await admin.serviceInspect("boxes").tasks) ?? []).map { "\($0.state) \($0.message)" }
            #expect(running3, "tasks: \(states)")
            // Each node reports the image it pulled, and how many of its tasks use it (flotilla image ls).
            let reported = try await eventually {
                let nodes = (try? await admin.imageList()) ?? []
                let images = nodes.flatMap(\.images).filter { $0.reference.hasSuffix("/image:1.0") && $0.digest.hasPrefix("sha256:") }
                return nodes.count == 2 && nodes.allSatisfy(\.reported) && images.reduce(0) { $0 + $1.inUse } == 3
            }
            let listed = (try? await admin.imageList()) ?? []
            #expect(reported, "\(listed)")
            let one = try await admin.imageList(node: "n1")
            #expect(one.map(\.nodeName) == ["n1"])
            _ = try await admin.serviceRemove("boxes")
            #expect(try await eventually(timeout: .seconds(30)) { await processes() == 0 })

            // On their own network: each container has an address on its node's subnet, answers there, and
            // reaches the containers of the other node.
            var web = spec
            web.name = "web"
            web.command = "mkdir -p /www && echo $FLOTILLA_TASK_ID > /www/index.html && exec httpd -f -p $PORT -h /www"
            var port = Flotilla_V1_PortSpec()
            port.targetPort = 8080
            web.ports = [port]
            web.replicas = 2
            web.maxReplicasPerNode = 1
            _ = try await admin.serviceCreate(web)
            let served = try await eventually(timeout: .seconds(30)) {
                let tasks = ((try? await admin.serviceInspect("web").tasks) ?? []).filter { $0.desiredState == .running }
                return tasks.count == 2 && tasks.allSatisfy { $0.state == .running && $0.address.hasPrefix("10.2") }
            }
            let tasks = try await admin.serviceInspect("web").tasks.filter { $0.desiredState == .running }
            #expect(served, "tasks: \(tasks.map { "\($0.state) \($0.address) \($0.message)" })")
            if served {
                #expect(Set(tasks.map(\.nodeID)).count == 2)
                // Running once started: httpd may take a moment more to listen.
                for task in tasks {
                    let answered = try await Self.answers(task.address, with: task.id)
                    #expect(answered, "the host reaches \(task.id) at \(task.address): \((try? Self.get(task.address)) ?? "-")")
                }
                let (first, second) = (tasks[0], tasks[1])
                let inside = NodeNetwork.prefix(for: NodeID(first.nodeID)) + "-" + first.id
                let crossed = try await Self.answers(second.address, with: second.id, inNamespace: inside)
                #expect(crossed, "\(first.id) on one node reaches \(second.id) on the other at \(second.address)")
            }
            _ = try await admin.serviceRemove("web")
            #expect(try await eventually(timeout: .seconds(30)) { await processes() == 0 })
        }
        // Each agent's cgroup parent is its own to remove.
        Self.removeCgroupParents()
    }

    @Test("bad input fails the task with a reason a person understands, shown by service ps: unknown image, unreachable registry, corrupt layer; an invalid spec is refused; the agent keeps running", .enabled(if: available))
    func badInput() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-oci-bad")
        try Self.makeBusyboxLayout(work.path + "/image")
        // The same image with one byte of its layer changed: its digest no longer matches.
        try FileManager.default.copyItem(atPath: work.path + "/image", toPath: work.path + "/corrupt")
        let blobs = work.path + "/corrupt/blobs/sha256"
        let layer = try #require(try FileManager.default.contentsOfDirectory(atPath: blobs).max { size(blobs + "/" + $0) < size(blobs + "/" + $1) })
        var bytes = try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + layer))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: URL(fileURLWithPath: blobs + "/" + layer))
        try await InProcessAgents.withCluster(work.path + "/controller", agents: ["n1"], runtimes: Self.ociRuntimes(work.path)) { admin, agents in
            func service(_ name: String, image: String) -> Flotilla_V1_ServiceSpec {
                var spec = Flotilla_V1_ServiceSpec()
                spec.name = name
                spec.driver = "oci"
                spec.image = image
                spec.command = "exec sleep 300"
                spec.replicas = 1
                spec.network = "host"
                return spec
            }
            let cases = [
                ("ghost", "oci:\(work.path)/missing:1", "is not an OCI image layout"),
                ("offline", "127.0.0.1:1/app:1", "unreachable"),
                ("corrupt", "oci:\(work.path)/corrupt:1.0", "does not match its digest"),
            ]
            for (name, image, _) in cases { _ = try await admin.serviceCreate(service(name, image: image)) }
            for (name, _, reason) in cases {
                let explained = try await eventually(timeout: .seconds(40)) {
                    let tasks = (try? await admin.serviceInspect(name).tasks) ?? []
                    return tasks.contains { $0.state == .failed && $0.message.hasPrefix("could not start: ") && $0.message.contains(reason) }
                }
                let messages = ((try? await admin.serviceInspect(name).tasks) ?? []).map { "\($0.state): \($0.message)" }
                #expect(explained, "\(name): \(messages)")
            }
            // An invalid spec never reaches an agent: refused naming the field.
            var unknownDriver = service("odd", image: "oci:\(work.path)/image:1.0")
            unknownDriver.driver = "docker"
            let refused = await #expect(throws: RPCError.self) { _ = try await admin.serviceCreate(unknownDriver) }
            #expect(refused?.message.contains("driver") == true, "\(refused?.message ?? "")")
            // The agent still runs what it can.
            _ = try await admin.serviceCreate(service("fine", image: "oci:\(work.path)/image:1.0"))
            let fine = try await eventually(timeout: .seconds(30)) {
                ((try? await admin.serviceInspect("fine").tasks) ?? []).contains { $0.desiredState == .running && $0.state == .running }
            }
            #expect(fine)
            for name in ["ghost", "offline", "corrupt", "fine"] { _ = try? await admin.serviceRemove(name) }
            #expect(try await eventually(timeout: .seconds(30)) { await agents.runningCount() == 0 })
        }
        Self.removeCgroupParents()
    }

    /// Each agent's OCI driver, with its images, bundles and runtime state under `work`.
    static func ociRuntimes(_ work: String) -> (String, String) throws -> [any ContainerRuntime] {
        { name, nodeID in
            [try OCIRuntimeSetup.make(preferred: nil, dataDirectory: work + "/" + name, nodeID: nodeID, runDirectory: work + "/run").get()]
        }
    }

    static func removeCgroupParents() {
        for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup/\(hierarchy)")) ?? [] where entry.hasPrefix("flotilla-") {
                _ = rmdir("/sys/fs/cgroup/\(hierarchy)/\(entry)")
            }
        }
    }
}

private func size(_ path: String) -> Int {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int) ?? 0
}
