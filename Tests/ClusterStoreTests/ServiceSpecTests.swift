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
        ("stop_grace_period_ms", "grace over an hour"), ("lb_mode", "unknown lb mode"), ("lb_policy", "a policy with a typo"),
        ("load_balancer.retries", "eleven retries"), ("load_balancer.connect_timeout_ms", "connect timeout over an hour"),
        ("load_balancer.idle_timeout_ms", "idle timeout over a day"), ("load_balancer.request_timeout_ms", "request timeout over an hour"),
        ("load_balancer.drain_timeout_ms", "drain over an hour"), ("load_balancer.slow_start_ms", "slow start over an hour"),
        ("load_balancer.hold_timeout_ms", "hold over 10 minutes"), ("load_balancer.hold_queue_limit", "hold queue over the limit"),
        ("autoscale.max", "autoscale max 0"), ("autoscale.max", "autoscale max over the limit"), ("autoscale.min", "autoscale min above max"),
        ("autoscale", "autoscale without a target"), ("autoscale.target_cpu_percent", "cpu target without a reservation"),
        ("autoscale", "autoscaled global service"), ("autoscale.scale_up_window_ms", "up window over an hour"),
        ("autoscale.scale_down_window_ms", "down window over an hour"),
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
        case "unknown lb mode": spec.lbMode = "udp"
        case "a policy with a typo": spec.lbPolicy = "least-con"
        case "eleven retries": spec.loadBalancer.retries = 11
        case "connect timeout over an hour": spec.loadBalancer.connectTimeoutMs = 3_600_001
        case "idle timeout over a day": spec.loadBalancer.idleTimeoutMs = 86_400_001
        case "request timeout over an hour": spec.loadBalancer.requestTimeoutMs = 3_600_001
        case "drain over an hour": spec.loadBalancer.drainTimeoutMs = 3_600_001
        case "slow start over an hour": spec.loadBalancer.slowStartMs = 3_600_001
        case "hold over 10 minutes": spec.loadBalancer.holdTimeoutMs = 600_001
        case "hold queue over the limit": spec.loadBalancer.holdQueueLimit = 65_537
        case "autoscale max 0": spec.autoscale = Self.autoscale(min: 0, max: 0)
        case "autoscale max over the limit": spec.autoscale = Self.autoscale(max: 10_001)
        case "autoscale min above max": spec.autoscale = Self.autoscale(min: 5, max: 4)
        case "autoscale without a target": spec.autoscale = Self.autoscale(rps: 0)
        case "cpu target without a reservation": spec.autoscale = Self.autoscale(cpu: 70)
        case "autoscaled global service":
            spec.autoscale = Self.autoscale()
            spec.mode = .global
            spec.replicas = 0
        case "up window over an hour": spec.autoscale = Self.autoscale(upMs: 3_600_001)
        case "down window over an hour": spec.autoscale = Self.autoscale(downMs: 3_600_001)
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

    static func autoscale(
        min: UInt32 = 2, max: UInt32 = 10, rps: UInt32 = 200, cpu: UInt32 = 0, upMs: UInt32? = nil, downMs: UInt32? = nil
    ) -> Flotilla_V1_AutoscaleSpec {
        var autoscale = Flotilla_V1_AutoscaleSpec()
        autoscale.min = min
        autoscale.max = max
        autoscale.targetRps = rps
        autoscale.targetCpuPercent = cpu
        if let upMs { autoscale.scaleUpWindowMs = upMs }
        if let downMs { autoscale.scaleDownWindowMs = downMs }
        return autoscale
    }

    @Test("an autoscaled spec is valid (min 0 too), gets the windows' defaults, keeps an explicit 0 and changes no task")
    func autoscale() {
        var spec = Self.valid()
        spec.autoscale = Self.autoscale(min: 0)
        #expect(ServiceSpecRules.problems(in: spec).isEmpty)
        let normalized = ServiceSpecRules.normalized(spec).autoscale
        #expect(normalized.scaleUpWindowMs == 10_000 && normalized.scaleDownWindowMs == 60_000)
        spec.autoscale.scaleUpWindowMs = 0
        #expect(ServiceSpecRules.normalized(spec).autoscale.scaleUpWindowMs == 0)
        #expect(ServiceSpecRules.taskDigest(spec) == ServiceSpecRules.taskDigest(Self.valid()))
        #expect(ServiceSpecRules.replicas(1, within: Self.autoscale(min: 2, max: 4)) == 2)
        #expect(ServiceSpecRules.replicas(3, within: Self.autoscale(min: 2, max: 4)) == 3)
        #expect(ServiceSpecRules.replicas(7, within: Self.autoscale(min: 2, max: 4)) == 4)
        spec.autoscale = Self.autoscale(min: 5, max: 4)
        #expect(ServiceSpecRules.problems(in: spec).map(\.description) == ["autoscale.min: 5 is more than max 4"])
    }

    static func env(_ name: String, _ value: String) -> Flotilla_V1_EnvVar {
        var variable = Flotilla_V1_EnvVar()
        variable.name = name
        variable.value = value
        return variable
    }

    @Test("policy and mode names are accepted with their aliases and stored under the canonical name")
    func policyAndModeNames() {
        for (given, stored) in [("least-connections", "least-conn"), ("weighted-round-robin", "round-robin"), ("leastconn", "least-conn"),
                                ("source", "ip-hash"), ("P2C", "p2c"), ("random", "random"), ("", "round-robin")] {
            var spec = Self.valid()
            spec.lbPolicy = given
            #expect(ServiceSpecRules.problems(in: spec).isEmpty, "\(given)")
            #expect(ServiceSpecRules.normalized(spec).lbPolicy == stored, "\(given)")
        }
        for (given, stored) in [("", "tcp"), ("tcp", "tcp"), ("http", "http"), ("l7", "http")] {
            var spec = Self.valid()
            spec.lbMode = given
            #expect(ServiceSpecRules.problems(in: spec).isEmpty, "\(given)")
            #expect(ServiceSpecRules.normalized(spec).lbMode == stored, "\(given)")
        }
        var wrong = Self.valid()
        wrong.lbPolicy = "fastest"
        #expect(ServiceSpecRules.problems(in: wrong).map(\.description) == ["lb_policy: 'fastest' is not a policy; use one of round-robin, least-conn, ip-hash, random, p2c"])
    }

    @Test("the load balancer's defaults are filled in, and an explicit 0 retries stays 0")
    func loadBalancerDefaults() {
        let defaults = ServiceSpecRules.normalized(Self.valid()).loadBalancer
        #expect(defaults.hasRetries && defaults.retries == 2)
        #expect(defaults.connectTimeoutMs == 5_000)
        #expect(defaults.idleTimeoutMs == 60_000)
        #expect(defaults.requestTimeoutMs == 30_000)
        #expect(defaults.drainTimeoutMs == 10_000)
        #expect(!defaults.proxyProtocol && defaults.backendMaxConnections == 0 && defaults.slowStartMs == 0 && !defaults.preferLocal)
        #expect(defaults.holdTimeoutMs == 30_000 && defaults.holdQueueLimit == 1_024)
        var spec = Self.valid()
        spec.loadBalancer.holdTimeoutMs = 600_000
        spec.loadBalancer.holdQueueLimit = 65_536
        #expect(ServiceSpecRules.problems(in: spec).isEmpty, "the largest hold and queue are allowed")
        #expect(ServiceSpecRules.normalized(spec).loadBalancer.holdTimeoutMs == 600_000)
        spec.loadBalancer.holdTimeoutMs = 700_000
        #expect(ServiceSpecRules.problems(in: spec).map(\.description)
            == ["load_balancer.hold_timeout_ms: 700000 ms is more than 10 minutes; a client should not wait longer for a replica to start"])
        spec = Self.valid()
        spec.loadBalancer.retries = 0
        spec.loadBalancer.drainTimeoutMs = 2_500
        let normalized = ServiceSpecRules.normalized(spec).loadBalancer
        #expect(normalized.hasRetries && normalized.retries == 0)
        #expect(normalized.drainTimeoutMs == 2_500)
        #expect(ServiceSpecRules.normalized(ServiceSpecRules.normalized(spec)) == ServiceSpecRules.normalized(spec))
    }

    @Test("a port without a protocol follows the service's mode; one with a protocol keeps it")
    func portProtocolFollowsMode() {
        var spec = Self.valid()
        var plain = Flotilla_V1_PortSpec()
        plain.targetPort = 9000
        spec.ports.append(plain)
        spec.lbMode = "http"
        let normalized = ServiceSpecRules.normalized(spec)
        #expect(normalized.ports.map(\.protocol) == ["http", ""], "the empty protocol is kept: it follows lb_mode")
        spec.ports[0].protocol = "tcp"
        #expect(spec.ports.map { ServiceSpecRules.effectiveProtocol(of: $0, in: spec) } == ["tcp", "http"])
        spec.lbMode = ""
        #expect(spec.ports.map { ServiceSpecRules.effectiveProtocol(of: $0, in: spec) } == ["tcp", "tcp"])
    }

    @Test("load-balancer settings change no task: the task digest ignores them")
    func loadBalancerSettingsReplaceNoTask() {
        let before = ServiceSpecRules.taskDigest(Self.valid())
        var spec = Self.valid()
        spec.lbMode = "http"
        spec.lbPolicy = "ip-hash"
        spec.ports[0].protocol = "tcp"
        spec.loadBalancer.retries = 0
        spec.loadBalancer.proxyProtocol = true
        spec.loadBalancer.drainTimeoutMs = 30_000
        #expect(ServiceSpecRules.taskDigest(spec) == before)
        spec.command = "python3 -m http.server $PORT --bind 0.0.0.0"
        #expect(ServiceSpecRules.taskDigest(spec) != before, "what the task runs still counts")
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
