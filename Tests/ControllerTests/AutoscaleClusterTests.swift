import AdminClient
import Agent
import Balancing
import ClusterModel
import ContainerRuntime
import Controller
import Foundation
import Logging
import Messages
import MetricsEndpoint
import PKI
import Prometheus
import Synchronization
import Testing
import TestSupport
import Transport
import Wire

/// The leader's autoscaler end to end in one process: a controller, an agent running process-driver replicas,
/// and a stand-in for the node's load balancer that reports request counters growing at a rate the test sets.
@Suite("Autoscaling in a cluster", .serialized)
struct AutoscaleClusterTests {
    /// The node's load balancer as the autoscaler sees it: the backend tables in, reports of requests out, each
    /// backend's counter growing by its share of `requestsPerSecond` of real time.
    final class FakeBalancer: BackendTableReceiver, BalancerStatsSource {
        struct State {
            var set = ServiceTableSet()
            var counts: [String: Double] = [:]
            var last: ContinuousClock.Instant?
        }

        private let state = Mutex(State())
        /// Requests per second to each service's backends together, by service name.
        let requestsPerSecond = Mutex<[String: Double]>([:])

        func apply(_ change: TableSetChange, set: ServiceTableSet) async { state.withLock { $0.set = set } }

        func balancerReport() async -> Flotilla_V1_BalancerReport {
            let rates = requestsPerSecond.withLock { $0 }
            return state.withLock { state in
                let now = ContinuousClock.now
                let elapsed = state.last.map { now - $0 } ?? .zero
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                state.last = now
                var report = Flotilla_V1_BalancerReport()
                for table in state.set.sorted {
                    let live = table.backends.filter { $0.weight > 0 }
                    let share = live.isEmpty ? 0 : (rates[table.name] ?? 0) / Double(live.count)
                    var stats = Flotilla_V1_ServiceBalancerStats()
                    stats.serviceID = table.serviceID
                    stats.serviceName = table.name
                    stats.targetPort = UInt32(table.ports.first?.target ?? 0)
                    stats.mode = "http"
                    for backend in table.backends {
                        if backend.weight > 0 { state.counts[backend.id, default: 0] += share * seconds }
                        var entry = Flotilla_V1_BackendBalancerStats()
                        entry.taskID = backend.id
                        entry.requests = UInt64(state.counts[backend.id] ?? 0)
                        stats.backends.append(entry)
                    }
                    report.services.append(stats)
                }
                return report
            }
        }
    }

    static func start(_ directory: String, window: Duration, metrics: PrometheusCollectorRegistry) async throws -> ControllerClusterTests.Running {
        var configuration = ControllerConfiguration(
            dataDirectory: directory, listenAddress: "127.0.0.1:0", raft: ControllerClusterTests.raftConfiguration())
        configuration.autoscaleWindow = window
        configuration.metrics = FlotillaMetrics.factory(registry: metrics)
        let server = try await ControllerServer(
            configuration: configuration,
            credentials: try ControllerDataDirectory(path: directory).loadCredentials(addresses: [], now: Date()), logger: Logger(label: "test"))
        return ControllerClusterTests.Running(server: server, task: Task { try await server.run() })
    }

    static func web(max: UInt32 = 5, downWindowMs: UInt32 = 2_000) -> Flotilla_V1_ServiceSpec {
        var spec = Flotilla_V1_ServiceSpec.process("web", command: "exec sleep 600", replicas: 1, monitorMs: 0)
        var port = Flotilla_V1_PortSpec()
        port.targetPort = 8000
        spec.ports = [port]
        spec.lbMode = "http"
        spec.autoscale.min = 1
        spec.autoscale.max = max
        spec.autoscale.targetRps = 10
        spec.autoscale.scaleUpWindowMs = 0
        spec.autoscale.scaleDownWindowMs = downWindowMs
        return spec
    }

    @Test("rising request rates scale a service up through Raft with the reason recorded, never past max; when they stop it scales back down after the window")
    func scalesUpAndDown() async throws {
        let work = try TemporaryDirectory(prefix: "flotilla-autoscale")
        let created = try ControllerDataDirectory(path: work.path + "/controller").initialize(addresses: [], now: Date())
        let registry = PrometheusCollectorRegistry()
        let running = try await Self.start(work.path + "/controller", window: .seconds(3), metrics: registry)
        let balancer = FakeBalancer()
        var agents = InProcessAgents()
        // As root the replicas get cgroups of their own, so the agent reports their CPU and memory too.
        let cgroupParent = getuid() == 0 ? "flotilla-test-\(UInt32.random(in: 1...UInt32.max))" : nil
        defer {
            if let cgroupParent {
                for hierarchy in (try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? [] {
                    rmdir("/sys/fs/cgroup/\(hierarchy)/\(cgroupParent)")
                }
            }
        }
        do {
            let server = running.server
            #expect(try await eventually(timeout: .seconds(30)) { await server.raftStatus.role == .leader })
            let admin = try await AdminClient.connect(to: [server.localAddress], credentials: try Credentials.load(from: created.adminCredentialsPath))
            agents = try await InProcessAgents.start(
                ["n1"], controllers: [server.localAddress], admin: admin, runtimes: { _, _ in [ProcessDriver(cgroupParent: cgroupParent)] },
                tables: { _ in balancer }, balancerStats: { _ in balancer })
            _ = try await admin.serviceCreate(Self.web())
            #expect(try await eventually(timeout: .seconds(30)) {
                (try? await admin.serviceInspect("web").tasks.filter { $0.state == .running && $0.ready }.count) == 1
            })

            // Quiet: measured, 0 requests/s, and one replica is the floor.
            #expect(try await eventually(timeout: .seconds(20)) { (try? await admin.serviceAutoscale("web"))?.measured == true })
            let quiet = try await admin.serviceAutoscale("web")
            #expect(quiet.requestsPerSecond == 0 && quiet.replicas == 1 && quiet.ready == 1, "\(quiet)")
            #expect(quiet.windowMs == 3_000 && quiet.service.spec.autoscale.scaleDownWindowMs == 2_000)
            if cgroupParent != nil {
                // Two reads of the replica's cgroup, 2 s apart: a `sleep` uses next to no CPU, and some memory.
                #expect(try await eventually(timeout: .seconds(20)) { (try? await admin.serviceAutoscale("web"))?.cpuMeasured == true })
                let usage = try await admin.serviceAutoscale("web")
                #expect(usage.cpuPercent >= 0 && usage.cpuPercent < 50 && usage.memoryBytes > 0, "\(usage)")
            }

            // 100 requests/s against a target of 10 per replica: 10 wanted, 5 at most.
            balancer.requestsPerSecond.withLock { $0["web"] = 100 }
            let most = Mutex<UInt32>(0)
            let scaledUp = try await eventually(timeout: .seconds(30)) {
                let replicas = (try? await admin.serviceInspect("web").service.spec.replicas) ?? 0
                most.withLock { $0 = max($0, replicas) }
                return replicas == 5
            }
            #expect(scaledUp)
            let up = try await admin.serviceAutoscale("web")
            print("after the rise:", up.service.autoscaleDecisions.map(\.reason))
            let rise = try #require(up.service.autoscaleDecisions.first)
            #expect(rise.from == 1 && rise.to > 1 && rise.reason.hasPrefix("rps ") && rise.reason.contains("> target 10"), "\(rise)")
            #expect(up.measured && up.requestsPerSecond > 20, "the measured rate shows: \(up.requestsPerSecond)")
            #expect(up.recommended >= 5, "what the targets ask for: \(up.recommended)")
            let cluster = ["--controller", server.localAddress, "--credentials", created.adminCredentialsPath]
            let shown = try await ControllerProcessTests.flotilla(cluster + ["service", "autoscale", "web"])
            print(shown.stdout)
            #expect(shown.status == 0, "\(shown.stderr)")
            #expect(shown.stdout.contains("  requests/s   ") && shown.stdout.contains("nodes        1 reporting"), "\(shown.stdout)")
            #expect(shown.stdout.contains("1 → 5  rps "), "the decision with its reason: \(shown.stdout)")

            // Load stays: it holds at max while the replicas start and share it.
            let holding = ContinuousClock.now + .seconds(4)
            while ContinuousClock.now < holding {
                let replicas = try await admin.serviceInspect("web").service.spec.replicas
                most.withLock { $0 = max($0, replicas) }
                try await Task.sleep(for: .milliseconds(200))
            }

            // The counters stop growing: after the rate window and the 2 s down-window it goes back to 1.
            balancer.requestsPerSecond.withLock { $0["web"] = 0 }
            let scaledDown = try await eventually(timeout: .seconds(30)) {
                let replicas = (try? await admin.serviceInspect("web").service.spec.replicas) ?? 0
                most.withLock { $0 = max($0, replicas) }
                return replicas == 1
            }
            #expect(scaledDown)
            let down = try await admin.serviceAutoscale("web")
            print("after the stop:", down.service.autoscaleDecisions.map(\.reason))
            let fall = try #require(down.service.autoscaleDecisions.last)
            #expect(fall.to == 1 && fall.from > 1 && fall.reason.contains("< target 10"), "\(fall)")
            #expect(most.withLock { $0 } <= 5, "never above max")
            #expect(down.service.autoscaleDecisions.allSatisfy { $0.to >= 1 && $0.to <= 5 })
            #expect(down.service.autoscaleDecisions.allSatisfy { $0.atMs > 0 })

            // Each committed decision is counted by direction; the gauges follow the service.
            var text: [UInt8] = []
            registry.emit(into: &text)
            let scraped = try PrometheusExposition(parsing: String(decoding: text, as: UTF8.self))
            let ups = down.service.autoscaleDecisions.filter { $0.to > $0.from }.count
            let downs = down.service.autoscaleDecisions.count - ups
            #expect(scraped.value("flotilla_autoscale_decisions_total", ["service": "web", "direction": "up"]) == Double(ups))
            #expect(scraped.value("flotilla_autoscale_decisions_total", ["service": "web", "direction": "down"]) == Double(downs))
            #expect(try await eventually {
                var text: [UInt8] = []
                registry.emit(into: &text)
                return try PrometheusExposition(parsing: String(decoding: text, as: UTF8.self)).value("flotilla_autoscale_replicas", ["service": "web"]) == 1
            })

            // A service that no longer autoscales loses its gauges.
            var plainWeb = try await admin.serviceInspect("web").service
            plainWeb.spec.clearAutoscale()
            _ = try await admin.serviceUpdate(plainWeb.spec, expectedVersion: plainWeb.version)
            #expect(try await eventually {
                var text: [UInt8] = []
                registry.emit(into: &text)
                return try PrometheusExposition(parsing: String(decoding: text, as: UTF8.self)).value("flotilla_autoscale_replicas", ["service": "web"]) == nil
            })

            // A service without autoscale, and none at all, are named.
            _ = try await admin.serviceCreate(.process("plain", command: "exec sleep 600", replicas: 1, monitorMs: 0))
            do {
                _ = try await admin.serviceAutoscale("plain")
                Issue.record("a service without autoscale was answered")
            } catch let error as RPCError {
                #expect(error.code == .failedPrecondition && error.message.contains("does not autoscale"), "\(error)")
            }
            do {
                _ = try await admin.serviceAutoscale("nosuch")
                Issue.record("an unknown service was answered")
            } catch let error as RPCError {
                #expect(error.code == .notFound, "\(error)")
            }
            await admin.close()
        } catch {
            await agents.stop()
            await ControllerClusterTests.stop(running)
            throw error
        }
        await agents.stop()
        await ControllerClusterTests.stop(running)
    }

    @Test("a follower answers ServiceAutoscale with NOT_LEADER and the leader's address")
    func followerRefuses() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-autoscale-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (all, admin) = try await ControllerClusterTests.startThree(root)
        do {
            let leader = try #require(await ControllerClusterTests.leader(all))
            let client = try await AdminClient.connect(to: [leader.server.localAddress], credentials: admin)
            _ = try await client.serviceCreate(Self.web())
            await client.close()
            let follower = try #require(all.first { $0.server !== leader.server })
            let (host, port) = try #require(HostPort.parse(follower.server.localAddress))
            let direct = try await RPCClient.connect(host: host, port: port, tls: try TLSContexts.client(credentials: admin))
            var request = Flotilla_V1_ServiceRef()
            request.service = "web"
            do {
                _ = try await direct.unary(Methods.serviceAutoscale, request, options: CallOptions(timeout: .seconds(5)))
                Issue.record("a follower answered")
            } catch let error as RPCError {
                #expect(error.code == .notLeader, "\(error)")
                #expect(error.leaderAddress == leader.server.localAddress, "\(error)")
            }
            await direct.close()
        } catch {
            for running in all { await ControllerClusterTests.stop(running) }
            throw error
        }
        for running in all { await ControllerClusterTests.stop(running) }
    }
}
