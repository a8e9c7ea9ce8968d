import Foundation
import TestSupport
import Testing

/// `flotilla events` against a controller process: JSON lines, filters, `--since` an id, and bad usage.
@Suite("Cluster events through the CLI", .serialized)
struct EventsCLITests {
    /// Each line of `text` as a JSON object.
    static func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not a JSON object: \(line)")
        }
    }

    @Test("events --output json is JSON lines; filters and --since an id narrow it; an unknown filter key is bad usage")
    func events() async throws {
        try await ControllerProcessTests.withController("flotilla-events-cli") { flotilla in
            let created = try await flotilla(["service", "create", "web", "--driver", "process", "--command", "sleep 600", "--replicas", "2", "--detach"])
            #expect(created.status == 0, "\(created.stderr)")
            // The founder's election is committed by its node monitor shortly after it leads.
            var all: [[String: Any]] = []
            let deadline = ContinuousClock.now + .seconds(10)
            while !all.contains(where: { $0["type"] as? String == "leader.elected" }) && ContinuousClock.now < deadline {
                let listed = try await flotilla(["events", "--output", "json"])
                #expect(listed.status == 0, "\(listed.stderr)")
                all = try Self.jsonLines(listed.stdout)
                if !all.contains(where: { $0["type"] as? String == "leader.elected" }) { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(all.contains { $0["type"] as? String == "leader.elected" }, "\(all)")
            let ids = all.compactMap { $0["id"] as? Int }
            #expect(ids.count == all.count && ids == ids.sorted())
            let web = try #require(all.first { $0["type"] as? String == "service.created" })
            #expect(web["service"] as? String == "web")
            #expect(web["message"] as? String == "created (2 replicas)")
            #expect((web["time"] as? String)?.hasSuffix("Z") == true)

            let services = try await flotilla(["events", "--output", "json", "--filter", "type=service", "--filter", "service=web"])
            #expect(services.status == 0, "\(services.stderr)")
            #expect(try Self.jsonLines(services.stdout).map { $0["type"] as? String } == ["service.created"])

            let after = try await flotilla(["events", "--output", "json", "--since", String(web["id"] as? Int ?? 0)])
            #expect(try Self.jsonLines(after.stdout).allSatisfy { ($0["id"] as? Int ?? 0) > (web["id"] as? Int ?? 0) })

            let table = try await flotilla(["events", "--filter", "type=service.created"])
            #expect(table.status == 0)
            let lines = table.stdout.split(separator: "\n")
            #expect(lines.first?.hasPrefix("TIME") == true)
            #expect(lines.count == 2 && lines[1].contains("service.created") && lines[1].contains("web   ") && lines[1].hasSuffix("created (2 replicas)"), "\(table.stdout)")

            let unknown = try await flotilla(["events", "--filter", "colour=red"])
            #expect(unknown.status == 2)
            #expect(unknown.stderr.contains("unknown filter key 'colour'"), "\(unknown.stderr)")
            let badSince = try await flotilla(["events", "--since", "yesterday"])
            #expect(badSince.status == 2)
            #expect(badSince.stderr.contains("--since yesterday"), "\(badSince.stderr)")
        }
    }
}
