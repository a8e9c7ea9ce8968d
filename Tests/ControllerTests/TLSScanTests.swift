import Foundation
import TestSupport
import Testing

/// The controller's port as a TLS scanner sees it: `deploy/tls-scan.sh` runs sslscan (Debian `sslscan`) against
/// a throwaway controller and checks the policy. Needs sslscan; CI installs it.
@Suite("TLS policy of the controller port")
struct TLSScanTests {
    static var sslscanInstalled: Bool {
        ["/usr/bin/sslscan", "/usr/local/bin/sslscan"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    }

    @Test("no TLS below 1.2, only forward-secret AEAD ciphers, no renegotiation or compression",
          .enabled(if: sslscanInstalled, "needs sslscan (apt-get install -y sslscan)"))
    func sslscanPolicy() async throws {
        let script = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/tls-scan.sh").path
        var environment = ProcessInfo.processInfo.environment
        environment["FLOTILLA_BIN_DIR"] = FlotillaBinaries.directory
        let result = try await ChildProcess.run("/bin/bash", [script, "--local"], environment: environment, timeout: .seconds(120))
        #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("TLS policy: PASS"))
        #expect(!result.stdout.contains("FAIL "))
    }
}
