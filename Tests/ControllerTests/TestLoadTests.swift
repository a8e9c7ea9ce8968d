import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// The cluster tests' load client reaches a lab host's network only if its threads really enter that namespace:
/// checked against a server that listens on loopback inside a namespace of its own.
@Suite("Load client and socket counts inside a network namespace")
struct TestLoadTests {
    static var available: Bool {
        getuid() == 0 && OCIRuntimeChoice.which("ip") != nil && FileManager.default.isExecutableFile(atPath: "/bin/busybox")
    }

    @Test("a load started in a network namespace reaches a server on that namespace's loopback, and a load outside does not",
          .enabled(if: available))
    func loadInsideNamespace() async throws {
        let namespace = String(format: "tl%05x", UInt32.random(in: 0..<0x10_0000))
        let work = try TemporaryDirectory(prefix: "flotilla-load")
        try await NetnsLab.ip(["netns", "add", namespace])
        defer { _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/ip"), arguments: ["netns", "delete", namespace]).waitUntilExit() }
        try await NetnsLab.ip(["-n", namespace, "link", "set", "lo", "up"])
        try "inside\n".write(toFile: work.path + "/index.html", atomically: true, encoding: .utf8)
        // A port nothing listens on in the test's own namespace, so a load that stayed outside finds no server.
        let port = try #require((20_000..<30_000).shuffled().first { !Self.listening(on: $0) })
        let server = try ChildProcess("/usr/sbin/ip", ["netns", "exec", namespace, "/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:\(port)", "-h", work.path])
        defer { server.removeOutput() }
        let up = try await eventually(timeout: .seconds(10)) { await NetnsLab.fetch("http://127.0.0.1:\(port)/", in: namespace) == "inside" }
        try #require(up, "httpd answers inside the namespace: \(server.standardError)")

        for style in [TestLoad.Connections.keepAlive, .perRequest] {
            let load = try TestLoad.start(
                targets: [TestLoad.Target("127.0.0.1", port)], connections: 2, style: style, namespace: namespace,
                maxRequests: 20, maxDuration: .seconds(20))
            await load.waitForRequests(20)
            let records = await load.stop()
            #expect(records.count == 20 && records.answers == ["inside": 20], "\(style): \(records.summary())")
        }
        let outside = try TestLoad.start(
            targets: [TestLoad.Target("127.0.0.1", port)], connections: 1, style: .perRequest, maxRequests: 2,
            maxDuration: .seconds(10), timeoutSeconds: 2)
        await outside.waitForRequests(2)
        let records = await outside.stop()
        #expect(records.count == 2 && records.failed.count == 2, "outside the namespace nobody listens: \(records.summary())")

        // What a drain counts: nothing while httpd only listens; a connection it holds (no request sent yet, so
        // httpd waits for one) once one is open.
        #expect(await NetworkNamespace.servedConnections(at: "/run/netns/" + namespace) == 0)
        let held = try #require(await Self.connect(port: port, inNamespace: namespace))
        defer { close(held) }
        let counted = try await eventually(timeout: .seconds(10)) { await NetworkNamespace.servedConnections(at: "/run/netns/" + namespace) == 1 }
        #expect(counted, "the connection the test holds is counted")
        // ip execs httpd (same pid); httpd may have inherited SIGTERM ignored from the test process.
        await server.stop(signal: SIGKILL)
    }

    /// A socket connected to 127.0.0.1:`port` inside `namespace` (made on a thread that entered it), or nil.
    static func connect(port: Int, inNamespace namespace: String) async -> Int32? {
        await withCheckedContinuation { continuation in
            Thread {
                let namespaceFD = open("/run/netns/" + namespace, O_RDONLY | O_CLOEXEC)
                guard namespaceFD >= 0, NetworkNamespace.enter(descriptor: namespaceFD) else { return continuation.resume(returning: nil) }
                close(namespaceFD)
                continuation.resume(returning: TestTCPClient.connect(port: port))
            }.start()
        }
    }

    /// Whether something listens on 127.0.0.1:`port` in the test's own namespace (/proc/net/tcp, state 0A).
    static func listening(on port: Int) -> Bool {
        let table = ProcFile.read("/proc/net/tcp") ?? ""
        let suffix = String(format: ":%04X", port)
        return table.split(separator: "\n").contains { line in
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[1].hasSuffix(suffix) && fields[3] == "0A"
        }
    }
}
