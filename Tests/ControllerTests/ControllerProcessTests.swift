import Foundation
import TestSupport
import Testing

/// The executables as an operator runs them: `flotilla-controller --init`, `flotilla status`, exit codes.
@Suite("flotilla-controller and flotilla as processes", .serialized)
struct ControllerProcessTests {
    /// Starts a controller on a free port and returns it with the address it serves on.
    static func startController(dataDirectory: String, initialize: Bool) async throws -> (ChildProcess, String) {
        let controller = try ChildProcess(
            try FlotillaBinaries.path("flotilla-controller"),
            ["--data-dir", dataDirectory, "--listen", "127.0.0.1:0"] + (initialize ? ["--init"] : []))
        var address: String?
        let deadline = ContinuousClock.now + .seconds(120)  // generous: CPU-heavy suites run in parallel
        while address == nil, ContinuousClock.now < deadline, controller.isRunning {
            if let range = controller.standardError.range(of: #"listen=127\.0\.0\.1:\d+"#, options: .regularExpression) {
                address = String(controller.standardError[range].dropFirst("listen=".count))
            } else {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        guard let address else {
            let output = controller.standardError
            await controller.stop()
            throw ChildProcessError("controller did not start serving: \(output)")
        }
        return (controller, address)
    }

    static func flotilla(_ arguments: [String], environment: [String: String]? = nil) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await ChildProcess.run(try FlotillaBinaries.path("flotilla"), arguments, environment: environment)
    }

    /// The CLI pointed at one controller: arguments in, exit status and output out.
    typealias CLI = ([String]) async throws -> (status: Int32, stdout: String, stderr: String)

    /// Runs `body` with the CLI of a new controller (initialized in a temporary directory named by `prefix`),
    /// and stops the controller however `body` ends.
    static func withController(_ prefix: String, _ body: (CLI) async throws -> Void) async throws {
        let work = try TemporaryDirectory(prefix: prefix)
        let (controller, address) = try await startController(dataDirectory: work.path + "/data", initialize: true)
        defer { controller.removeOutput() }
        let cluster = ["--controller", address, "--credentials", work.path + "/data/admin.creds"]
        do {
            try await body { arguments in try await flotilla(cluster + arguments) }
        } catch {
            await controller.stop()
            throw error
        }
        await controller.stop()
    }

    /// A JSON object the CLI printed.
    static func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    @Test("--init, status, restart from the same data dir, and the CLI's exit codes")
    func lifecycle() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-proc-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let data = root + "/data"
        let creds = data + "/admin.creds"

        var (controller, address) = try await Self.startController(dataDirectory: data, initialize: true)
        do {
            #expect(controller.standardOutput.contains("Admin credentials: \(creds)"))
            let status = try await Self.flotilla(["--controller", address, "--credentials", creds, "status"])
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains("Controller:"))
            #expect(status.stdout.contains("Uptime:"))
            let controllerID = status.stdout.split(separator: "\n").first { $0.hasPrefix("Controller:") }?
                .split(separator: " ").last.map(String.init)

            // JSON output, with the cluster found through the environment variables.
            let json = try await Self.flotilla(
                ["status", "--output", "json"],
                environment: ["FLOTILLA_CONTROLLER": address, "FLOTILLA_CREDENTIALS": creds])
            #expect(json.status == 0, "\(json.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect(object?["controller_id"] as? String == controllerID)

            // Missing credentials: a clear error, exit status 1.
            let missing = try await Self.flotilla(["--controller", address, "status"], environment: [:])
            #expect(missing.status == 1)
            #expect(missing.stderr.contains("no credentials given"))

            // A credentials file that does not exist: exit 1, naming the path.
            let absent = try await Self.flotilla(["--controller", address, "--credentials", root + "/nope.creds", "status"])
            #expect(absent.status == 1)
            #expect(absent.stderr.contains(root + "/nope.creds"))

            // Credentials of another cluster: refused, exit 1.
            let otherData = root + "/other"
            let (otherController, _) = try await Self.startController(dataDirectory: otherData, initialize: true)
            await otherController.stop()
            otherController.removeOutput()
            let foreign = try await Self.flotilla(["--controller", address, "--credentials", otherData + "/admin.creds", "status"])
            #expect(foreign.status == 1)
            #expect(foreign.stderr.contains("error:"))

            // Bad usage: exit 2.
            let usage = try await Self.flotilla(["status", "--no-such-flag"])
            #expect(usage.status == 2)
            let badAddress = try await Self.flotilla(["--controller", "nonsense", "--credentials", creds, "status"])
            #expect(badAddress.status == 2)

            // --init on a data dir that already holds a controller is refused.
            let again = try await ChildProcess.run(
                try FlotillaBinaries.path("flotilla-controller"),
                ["--data-dir", data, "--listen", "127.0.0.1:0", "--init"])
            #expect(again.status == 1)
            #expect(again.stderr.contains("already holds a Flotilla controller"))

            // SIGTERM stops the controller gracefully; restarted without --init it serves the same cluster.
            #expect(await controller.stop() == 0)
            controller.removeOutput()
            (controller, address) = try await Self.startController(dataDirectory: data, initialize: false)
            let restarted = try await Self.flotilla(["--controller", address, "--credentials", creds, "status"])
            #expect(restarted.status == 0, "\(restarted.stderr)")
            #expect(restarted.stdout.contains(controllerID ?? "?"))
        } catch {
            await controller.stop()
            controller.removeOutput()
            throw error
        }
        await controller.stop()
        controller.removeOutput()
    }
}
