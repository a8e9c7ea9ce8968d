import Foundation
import TestSupport
import Testing

/// The load-balancer flags of `flotilla service create/update` against a controller process: each lands in the
/// spec, `update` changes only those given, `inspect` and `ls --output json` show the settings and the virtual IP.
@Suite("Load-balancer settings through the CLI", .serialized)
struct ServiceLoadBalancerCLITests {
    static func json(_ text: String) throws -> [String: Any] { try ControllerProcessTests.json(text) }

    @Test("create and update set the load-balancer flags given; inspect and ls show them with the virtual IP")
    func flags() async throws {
        try await ControllerProcessTests.withController("flotilla-lb-cli") { flotilla in
            let created = try await flotilla([
                "service", "create", "web", "--driver", "process", "--command", "sleep 600", "--replicas", "0", "--publish", "8080:80",
                "--lb-mode", "http", "--lb-policy", "least-connections", "--lb-retries", "0", "--lb-connect-timeout", "2s",
                "--lb-idle-timeout", "90s", "--lb-request-timeout", "15s", "--drain-timeout", "20s", "--proxy-protocol",
                "--lb-max-conns", "50", "--lb-slow-start", "10s", "--lb-prefer-local", "--lb-hold-timeout", "5s",
                "--lb-hold-queue", "10", "--detach"])
            #expect(created.status == 0, "\(created.stderr)")
            let inspected = try Self.json(try await flotilla(["service", "inspect", "web"]).stdout)
            let spec = try #require(inspected["spec"] as? [String: Any])
            #expect(inspected["virtual_ip"] as? String == "10.96.0.1")
            #expect(spec["lb_mode"] as? String == "http")
            #expect(spec["lb_policy"] as? String == "least-conn", "stored under its canonical name")
            let balancer = try #require(spec["load_balancer"] as? [String: Any])
            #expect(balancer["retries"] as? Int == 0, "an explicit 0 is shown: no retries")
            #expect(balancer["connect_timeout_ms"] as? Int == 2_000)
            #expect(balancer["idle_timeout_ms"] as? Int == 90_000)
            #expect(balancer["request_timeout_ms"] as? Int == 15_000)
            #expect(balancer["drain_timeout_ms"] as? Int == 20_000)
            #expect(balancer["proxy_protocol"] as? Bool == true)
            #expect(balancer["backend_max_connections"] as? Int == 50)
            #expect(balancer["slow_start_ms"] as? Int == 10_000)
            #expect(balancer["prefer_local"] as? Bool == true)
            #expect(balancer["hold_timeout_ms"] as? Int == 5_000)
            #expect(balancer["hold_queue_limit"] as? Int == 10)

            // Only the flags given change.
            let updated = try await flotilla(["service", "update", "web", "--no-proxy-protocol", "--lb-retries", "3", "--detach"])
            #expect(updated.status == 0, "\(updated.stderr)")
            let after = try Self.json(try await flotilla(["service", "inspect", "web"]).stdout)
            let afterBalancer = try #require((after["spec"] as? [String: Any])?["load_balancer"] as? [String: Any])
            #expect(afterBalancer["proxy_protocol"] == nil, "false is not shown")
            #expect(afterBalancer["retries"] as? Int == 3)
            #expect(afterBalancer["drain_timeout_ms"] as? Int == 20_000)
            #expect(after["virtual_ip"] as? String == "10.96.0.1", "kept across updates")

            // A second service, with every default.
            let plain = try await flotilla(["service", "create", "api", "--driver", "process", "--command", "sleep 600", "--replicas", "0", "--detach"])
            #expect(plain.status == 0, "\(plain.stderr)")
            let listed = try await flotilla(["service", "ls", "--output", "json"])
            let services = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
            let byName = Dictionary(uniqueKeysWithValues: services.map { ($0["name"] as? String ?? "", $0) })
            #expect(byName["web"]?["virtual_ip"] as? String == "10.96.0.1")
            #expect(byName["api"]?["virtual_ip"] as? String == "10.96.0.2")
            #expect(byName["api"]?["lb_mode"] as? String == "tcp")
            #expect(byName["api"]?["lb_policy"] as? String == "round-robin")
            let table = try await flotilla(["service", "ls"])
            #expect(table.stdout.contains("VIRTUAL IP") && table.stdout.contains("10.96.0.2"))
            #expect(table.stdout.contains("8080→80/http"), "the port follows the service's mode: \(table.stdout)")

            // Mistakes are named before anything is sent.
            let badMode = try await flotilla(["service", "create", "bad", "--driver", "process", "--command", "x", "--lb-mode", "udp", "--detach"])
            #expect(badMode.status == 1)
            #expect(badMode.stderr.contains("lb_mode: 'udp' is not a load-balancer mode; use tcp or http"), "\(badMode.stderr)")
            let badDuration = try await flotilla(["service", "update", "web", "--drain-timeout", "later", "--detach"])
            #expect(badDuration.status != 0)
            #expect(badDuration.stderr.contains("--drain-timeout later is not a duration"), "\(badDuration.stderr)")
            let tooMany = try await flotilla(["service", "update", "web", "--lb-retries", "11", "--detach"])
            #expect(tooMany.status == 1)
            #expect(tooMany.stderr.contains("load_balancer.retries"), "\(tooMany.stderr)")
        }
    }
}
