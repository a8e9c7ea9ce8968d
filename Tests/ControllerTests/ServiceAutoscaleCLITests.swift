import Foundation
import TestSupport
import Testing

/// `--autoscale` on `flotilla service create/update` against a controller process: the settings land in the spec
/// with their defaults, `update` changes only the keys given, `off` removes them, mistakes name the key or field.
@Suite("Autoscale settings through the CLI", .serialized)
struct ServiceAutoscaleCLITests {
    @Test("create and update set the autoscale settings given; inspect shows them with the windows' defaults")
    func flags() async throws {
        try await ControllerProcessTests.withController("flotilla-autoscale-cli") { flotilla in
            let inspect = ["service", "inspect", "web"]
            let created = try await flotilla([
                "service", "create", "web", "--driver", "process", "--command", "sleep 600",
                "--autoscale", "min=2,max=10,target-rps=200", "--detach"])
            #expect(created.status == 0, "\(created.stderr)")
            let inspected = try ControllerProcessTests.json(try await flotilla(inspect).stdout)
            let spec = try #require(inspected["spec"] as? [String: Any])
            #expect(spec["replicas"] as? Int == 2, "without --replicas the service starts at min")
            let autoscale = try #require(spec["autoscale"] as? [String: Any])
            #expect(autoscale["min"] as? Int == 2)
            #expect(autoscale["max"] as? Int == 10)
            #expect(autoscale["target_rps"] as? Int == 200)
            #expect(autoscale["scale_up_window_ms"] as? Int == 10_000, "the defaults are stored and shown")
            #expect(autoscale["scale_down_window_ms"] as? Int == 60_000)

            // Only the keys given change.
            let updated = try await flotilla(["service", "update", "web", "--autoscale", "max=4,target-conns=50,up-window=0s,down-window=2m", "--detach"])
            #expect(updated.status == 0, "\(updated.stderr)")
            let reinspected = try ControllerProcessTests.json(try await flotilla(inspect).stdout)
            let after = try #require((reinspected["spec"] as? [String: Any])?["autoscale"] as? [String: Any])
            #expect(after["min"] as? Int == 2)
            #expect(after["max"] as? Int == 4)
            #expect(after["target_rps"] as? Int == 200)
            #expect(after["target_connections"] as? Int == 50)
            #expect(after["scale_up_window_ms"] as? Int == 0, "an explicit 0 is kept and shown")
            #expect(after["scale_down_window_ms"] as? Int == 120_000)

            // Mistakes name the key or the field.
            let typo = try await flotilla(["service", "update", "web", "--autoscale", "target-rsp=1", "--detach"])
            #expect(typo.status != 0)
            #expect(typo.stderr.contains("target-rsp") && typo.stderr.contains("target-rps"), "\(typo.stderr)")
            let inverted = try await flotilla(["service", "update", "web", "--autoscale", "min=5", "--detach"])
            #expect(inverted.status == 1)
            #expect(inverted.stderr.contains("autoscale.min: 5 is more than max 4"), "\(inverted.stderr)")
            let noReservation = try await flotilla([
                "service", "create", "cpu", "--driver", "process", "--command", "x", "--autoscale", "max=3,target-cpu=70", "--detach"])
            #expect(noReservation.status == 1)
            #expect(noReservation.stderr.contains("autoscale.target_cpu_percent"), "\(noReservation.stderr)")

            // off removes it; the replicas stay.
            let off = try await flotilla(["service", "update", "web", "--autoscale", "off", "--detach"])
            #expect(off.status == 0, "\(off.stderr)")
            let removed = try ControllerProcessTests.json(try await flotilla(inspect).stdout)
            let plain = try #require(removed["spec"] as? [String: Any])
            #expect(plain["autoscale"] == nil)
            #expect(plain["replicas"] as? Int == 2)
        }
    }

    @Test("service autoscale shows the settings and what is not measured yet; json has the response; unknown or plain services exit 1")
    func show() async throws {
        try await ControllerProcessTests.withController("flotilla-autoscale-show") { flotilla in
            let created = try await flotilla([
                "service", "create", "web", "--driver", "process", "--command", "sleep 600",
                "--autoscale", "min=1,max=6,target-rps=200,target-conns=40,down-window=2m", "--detach"])
            #expect(created.status == 0, "\(created.stderr)")
            let shown = try await flotilla(["service", "autoscale", "web"])
            print(shown.stdout)
            #expect(shown.status == 0, "\(shown.stderr)")
            #expect(shown.stdout.contains("between 1 and 6 replicas"), "\(shown.stdout)")
            #expect(shown.stdout.contains("200 rps, 40 connections per ready replica"), "\(shown.stdout)")
            #expect(shown.stdout.contains("up 10 s, down 2 min; rates over the last 10 s"), "\(shown.stdout)")
            #expect(shown.stdout.contains("traffic      not measured"), "no agent reports it: \(shown.stdout)")
            #expect(shown.stdout.contains("cpu          not measured"), "\(shown.stdout)")
            #expect(shown.stdout.contains("decisions: none yet"), "\(shown.stdout)")

            let json = try ControllerProcessTests.json(try await flotilla(["service", "autoscale", "web", "--output", "json"]).stdout)
            #expect(json["replicas"] as? Int == 1)
            #expect(json["window_ms"] as? String == "10000" || json["window_ms"] as? Int == 10_000, "\(json)")
            #expect(json["measured"] == nil, "false is proto JSON's default, left out: \(json)")
            let autoscale = try #require(((json["service"] as? [String: Any])?["spec"] as? [String: Any])?["autoscale"] as? [String: Any])
            #expect(autoscale["target_rps"] as? Int == 200 && autoscale["scale_down_window_ms"] as? Int == 120_000)

            let unknown = try await flotilla(["service", "autoscale", "nosuch"])
            #expect(unknown.status == 1)
            #expect(unknown.stderr.contains("no service named 'nosuch'"), "\(unknown.stderr)")
            _ = try await flotilla(["service", "create", "plain", "--driver", "process", "--command", "sleep 600", "--detach"])
            let plain = try await flotilla(["service", "autoscale", "plain"])
            #expect(plain.status == 1)
            #expect(plain.stderr.contains("service plain does not autoscale"), "\(plain.stderr)")
        }
    }
}
