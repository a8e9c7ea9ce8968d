import ClusterStore
import Messages
import Testing

@Suite("Service specs: every field validated, with the field named")
struct ServiceSpecTests {
    static func valid() -> Flotilla_V1_ServiceSpec {
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = "hello"
        spec.driver = "process"
        spec.command = "python3 -m http.server $PORT"
        spec.replicas = 3
        var port = Flotilla_V1_PortSpec()
        port.targetPort = 8000
        port.publishedPort = 8080
        port.protocol = "http"
        spec.ports = [port]
        spec.constraints = ["node.labels.zone==a", "node.name != n9", "node.role==agent"]
        spec.spreadOver = "node.labels.zone"
        return spec
    }

    @Test("a complete spec is valid, before and after defaults are filled in")
    func validSpec() {
        #expect(ServiceSpecRules.problems(in: Self.valid()).isEmpty)
        let normalized = ServiceSpecRules.normalized(Self.valid())
        #expect(ServiceSpecRules.problems(in: normalized).isEmpty)
        #expect(normalized.lbPolicy == "round-robin")
        #expect(normalized.restartPolicy.condition == "any")
        #expect(normalized.updateConfig.parallelism == 1)
        #expect(normalized.updateConfig.order == "stop-first")
        #expect(normalized.updateConfig.failureAction == "pause")
    }

    /// The valid spec with one thing broken, and the field that must be named for it.
    static let breakages: [(field: String, label: String)] = [
        ("name", "upper case and '_'"), ("driver", "unknown driver"), ("command", "process without command"),
        ("image", "oci without image"), ("env[1].name", "variable set twice"), ("env[0].name", "name starting with a digit"),
        ("replicas", "global with replicas"), ("resources.memory_limit_bytes", "limit below reservation"),
        ("resources.cpu_limit_millis", "cpu limit below reservation"), ("constraints[0]", "no operator"),
        ("constraints[1]", "unknown attribute"), ("spread_over", "not a label"),
        ("ports[0].published_port", "port 70000"), ("ports[0].target_port", "port 0"), ("ports[0].protocol", "udp"),
        ("ports[1].published_port", "published twice"), ("ports[0].publish_mode", "unknown mode"),
        ("ports[0].published_port", "host mode unpublished"), ("lb_policy", "unknown policy"), ("health_check", "neither check"),
        ("health_check.timeout_ms", "timeout not below interval"), ("restart_policy.condition", "unknown condition"),
        ("update_config.order", "unknown order"), ("update_config.failure_action", "unknown action"),
        ("rollback_config.max_failure_ratio", "ratio above 1"), ("readiness_check", "two kinds of readiness check"),
        ("health_check", "tcp without a port"), ("network", "unknown network"), ("network", "process on a bridge"),
        ("stop_grace_period_ms", "grace over an hour"),
    ]

    static func broken(_ label: String) -> Flotilla_V1_ServiceSpec {
        var spec = valid()
        switch label {
        case "upper case and '_'": spec.name = "Hello_World"
        case "unknown driver": spec.driver = "docker"
        case "process without command": spec.command = ""
        case "oci without image": spec.driver = "oci"
        case "variable set twice": spec.env = [env("A", "1"), env("A", "2")]
        case "name starting with a digit": spec.env = [env("1X", "1")]
        case "global with replicas": spec.mode = .global
        case "limit below reservation":
            spec.resources.memoryReservationBytes = 64 << 20
            spec.resources.memoryLimitBytes = 32 << 20
        case "cpu limit below reservation":
            spec.resources.cpuReservationMillis = 500
            spec.resources.cpuLimitMillis = 250
        case "no operator": spec.constraints = ["zone=a"]
        case "unknown attribute": spec.constraints = ["node.role==agent", "node.colour==blue"]
        case "not a label": spec.spreadOver = "zone"
        case "port 70000": spec.ports[0].publishedPort = 70_000
        case "port 0": spec.ports[0].targetPort = 0
        case "udp": spec.ports[0].protocol = "udp"
        case "published twice":
            var port = spec.ports[0]
            port.targetPort = 9000
            spec.ports.append(port)
        case "unknown mode": spec.ports[0].publishMode = "nodeport"
        case "host mode unpublished":
            spec.ports[0].publishMode = "host"
            spec.ports[0].publishedPort = 0
        case "unknown policy": spec.lbPolicy = "fastest"
        case "neither check": spec.healthCheck = Flotilla_V1_HealthCheck()
        case "timeout not below interval":
            spec.healthCheck.httpPath = "/health"
            spec.healthCheck.intervalMs = 1000
            spec.healthCheck.timeoutMs = 1000
        case "unknown condition": spec.restartPolicy.condition = "always"
        case "unknown order": spec.updateConfig.order = "random"
        case "unknown action": spec.updateConfig.failureAction = "panic"
        case "ratio above 1": spec.rollbackConfig.maxFailureRatio = 1.5
        case "two kinds of readiness check":
            spec.readinessCheck.httpPath = "/ready"
            spec.readinessCheck.tcp = true
        case "tcp without a port":
            spec.ports = []
            spec.healthCheck = Flotilla_V1_HealthCheck()
            spec.healthCheck.tcp = true
        case "unknown network": spec.network = "overlay"
        case "process on a bridge": spec.network = "bridge"
        case "grace over an hour": spec.stopGracePeriodMs = 3_600_001
        default: Issue.record("no breakage named \(label)")
        }
        return spec
    }

    @Test("each broken field is reported by name", arguments: breakages)
    func brokenField(_ breakage: (field: String, label: String)) {
        let problems = ServiceSpecRules.problems(in: Self.broken(breakage.label))
        #expect(problems.map(\.field).contains(breakage.field), "\(breakage.label): \(problems)")
        #expect(problems.allSatisfy { !$0.message.isEmpty })
    }

    static func env(_ name: String, _ value: String) -> Flotilla_V1_EnvVar {
        var variable = Flotilla_V1_EnvVar()
        variable.name = name
        variable.value = value
        return variable
    }

    @Test("constraints parse into attribute, comparison and value")
    func constraints() {
        #expect(PlacementConstraint.parse("node.labels.zone==a").constraint == PlacementConstraint(attribute: .label("zone"), equals: true, value: "a"))
        #expect(PlacementConstraint.parse("node.name != web-1").constraint == PlacementConstraint(attribute: .name, equals: false, value: "web-1"))
        #expect(PlacementConstraint.parse("node.role==agent").constraint?.attribute == .role)
        #expect(PlacementConstraint.parse("node.labels.==a").problem != nil)
        #expect(PlacementConstraint.parse("node.name==").problem != nil)
    }
}
