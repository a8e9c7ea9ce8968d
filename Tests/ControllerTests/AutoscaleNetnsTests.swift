import Foundation
import Synchronization
import TestSupport
import Testing

/// The autoscaler in a cluster of real processes (hosts as network namespaces, see NetnsLab): traffic through
/// the published port raises the replicas, its end lowers them after the down-window, to zero with min 0, and
/// the first request after that wakes the service and is answered.
@Suite("Autoscaling across hosts (network namespaces)", .serialized)
struct AutoscaleNetnsTests {
    /// The replica count over time, polled from `service ls` every half second until stopped.
    final class ReplicaWatch: Sendable {
        struct Sample: Sendable {
            let at: ContinuousClock.Instant
            let replicas: Int
        }
        private let samples = Mutex<[Sample]>([])
        private let task = Mutex<Task<Void, Never>?>(nil)

        init(_ lab: NetnsLab, service: String) {
            let poller = Task { [self] in
                while !Task.isCancelled {
                    let services = NetnsLab.json((try? await lab.flotilla(["service", "ls", "--output", "json"])) ?? "")
                    if let record = services.first(where: { $0["name"] as? String == service }), let replicas = record["replicas"] as? Int {
                        self.samples.withLock { $0.append(Sample(at: .now, replicas: replicas)) }
                    }
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
            task.withLock { $0 = poller }
        }

        var all: [Sample] { samples.withLock { $0 } }
        var current: Int? { all.last?.replicas }

        /// The first time the count met `condition` at or after `since`.
        func first(since: ContinuousClock.Instant, _ condition: (Int) -> Bool) -> ContinuousClock.Instant? {
            all.first { $0.at >= since && condition($0.replicas) }?.at
        }

        func stop() { task.withLock { $0?.cancel() } }
    }

    @Test("load on the published port scales a service up within 20 s, its end scales it to zero after the down-window, and the next request wakes it",
          .enabled(if: NetnsLab.available))
    func scaleWithTraffic() async throws {
        try await NetnsLab.run(clients: 1) { lab, _ in
            try OCIServiceTests.makeBusyboxLayout(lab.work.path + "/image")
            // A target of 20 requests/s per replica: the load below is far more, so the autoscaler wants max.
            let (upWindow, downWindow) = (5, 15)
            _ = try await lab.flotilla([
                "service", "create", "web", "--driver", "oci", "--image", "oci:\(lab.work.path)/image:1.0", "--replicas", "1",
                "--publish", "9090:8080", "--lb-mode", "http", "--command", LoadBalancerClusterTests.serve, "--detach",
                "--autoscale", "min=0,max=3,target-rps=20,up-window=\(upWindow)s,down-window=\(downWindow)s"])
            let first = try #require(try await lab.runningTasks("web", count: 1))
            try await LoadBalancerClusterTests.waitForMesh(lab, tasks: first, from: 4)
            let watch = ReplicaWatch(lab, service: "web")
            defer { watch.stop() }

            // Rise: 8 client connections from host 4 on both agents' published ports.
            let load = try TestLoad.start(
                targets: LoadBalancerClusterTests.meshTargets(lab), connections: 8, style: .keepAlive, namespace: lab.host(4),
                maxRequests: 200_000, maxDuration: .seconds(90))
            let rise = ContinuousClock.now
            let scaledUp = try await eventually(timeout: .seconds(60), interval: .milliseconds(250)) { watch.current == 3 }
            let firstUp = watch.first(since: rise) { $0 > 1 }
            let atMax = watch.first(since: rise) { $0 == 3 }
            // Serve at the top for a while, so every new replica takes traffic.
            _ = try await lab.runningTasks("web", count: 3)
            try await Task.sleep(for: .seconds(3))
            let records = await load.stop()
            let fall = ContinuousClock.now
            print("autoscale: load", records.summary(), "| first scale-up after", firstUp.map { $0 - rise } as Any,
                  "| at max after", atMax.map { $0 - rise } as Any)
            #expect(scaledUp, "the service reached max 3 under load: \(watch.all.map(\.replicas))")
            let upDelay = try #require(firstUp) - rise
            #expect(upDelay <= .seconds(20), "the first scale-up came \(upDelay) after the rise")
            #expect(records.failed.count <= records.count / 100, "requests failed while scaling up: \(records.failed.prefix(5))")

            // Fall: nothing for the whole down-window, then straight to zero (min 0).
            let zero = try await eventually(timeout: .seconds(Double(downWindow) + 45), interval: .milliseconds(250)) { watch.current == 0 }
            let down = watch.first(since: fall) { $0 < 3 }
            print("autoscale: first scale-down", down.map { $0 - fall } as Any, "after the load ended")
            #expect(zero, "the idle service scaled to zero: \(watch.all.suffix(10).map(\.replicas))")
            let downDelay = try #require(down) - fall
            #expect(downDelay >= .seconds(downWindow), "no scale-down before the \(downWindow) s window: \(downDelay)")
            #expect(watch.all.allSatisfy { (0...3).contains($0.replicas) }, "never outside min/max: \(Set(watch.all.map(\.replicas)))")
            let stopped = try await eventually(timeout: .seconds(30)) {
                let tasks = NetnsLab.json((try? await lab.flotilla(["service", "ps", "web", "--output", "json"])) ?? "")
                return !tasks.contains { $0["current"] as? String == "running" }
            }
            #expect(stopped, "no replica runs at zero")

            // Wake: the first request is held by n2's balancer while a replica starts, then answered.
            let asked = ContinuousClock.now
            let answer = await Self.fetch("http://\(lab.address(2)):9090/", in: lab.host(4), timeoutSeconds: 40)
            print("autoscale: the first request after zero was answered after", ContinuousClock.now - asked, "by", answer as Any)
            #expect(answer?.isEmpty == false, "the first request after scale-to-zero is answered")
            let woke = try await eventually { (watch.current ?? 0) >= 1 }
            #expect(woke, "the wake set a replica: \(watch.all.suffix(5).map(\.replicas))")

            let decisions = try await lab.flotilla(["service", "autoscale", "web"])
            print(decisions)
            #expect(decisions.contains("rps"), "the decisions give their reasons")
            let events = try await lab.flotilla(["events", "--filter", "type=service.scaled", "--output", "json"])
            #expect(events.split(separator: "\n").count >= 3, "the scale-up, the scale-down and the wake are events: \(events)")
            _ = try await lab.flotilla(["service", "rm", "web"])
        }
    }

    /// GET `url` from inside `namespace` with busybox wget, waiting up to `timeoutSeconds` (coreutils' timeout:
    /// this busybox's own `wget -T` crashes); the body, or nil.
    static func fetch(_ url: String, in namespace: String, timeoutSeconds: Int) async -> String? {
        let result = try? await ChildProcess.run(
            "/usr/sbin/ip", ["netns", "exec", namespace, "/usr/bin/timeout", "\(timeoutSeconds)", "/bin/busybox", "wget", "-qO-", url], timeout: .seconds(Double(timeoutSeconds) + 10))
        guard result?.status == 0 else {
            print("fetch \(url) failed: status \(result?.status as Any), \(result?.stderr ?? "")")
            return nil
        }
        return result?.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
