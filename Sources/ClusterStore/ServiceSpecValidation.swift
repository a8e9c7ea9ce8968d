public import Messages
internal import Balancing

/// One thing wrong with a service spec: which field, and what is wrong with it.
public struct SpecProblem: Sendable, Hashable, CustomStringConvertible {
    /// The field's path, e.g. "ports[1].published_port".
    public var field: String
    public var message: String

    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }

    public var description: String { "\(field): \(message)" }
}

/// The rules of a service spec, and its defaults. Pure: the leader checks a spec before it commits it, the CLI
/// before it sends it, and the store again when it applies it.
public enum ServiceSpecRules {
    public static let drivers = ["oci", "process"]
    /// The canonical policy names (Balancing's); aliases such as "least-connections" are accepted and stored
    /// under these.
    public static let policies = BalancingPolicy.allCases.map(\.rawValue)
    /// The load-balancer modes (`lb_mode`; aliases "l4" and "l7" are accepted and stored as these), and the
    /// protocols a port may name.
    public static let modes = ProxyMode.allCases.map(\.rawValue)
    public static let protocols = ["tcp", "http"]
    public static let restartConditions = ["any", "on-failure", "none"]
    public static let updateOrders = ["stop-first", "start-first"]
    public static let failureActions = ["pause", "rollback", "continue"]
    public static let maxReplicas: UInt32 = 10_000
    public static let maxNameLength = 63

    /// The spec with every unset field at its default (driver "oci", policy "round-robin", mode "tcp", the
    /// load balancer's defaults, restart "any" after 1 s, updates one at a time stop-first pausing on failure,
    /// 5 s monitor, health checks every 5 s with a 2 s timeout and 3 retries), and policy and mode under their
    /// canonical names. Validating a normalized spec gives the same answer. A port's empty protocol stays empty:
    /// it follows `lb_mode`, so changing the mode later changes it too.
    public static func normalized(_ spec: Flotilla_V1_ServiceSpec) -> Flotilla_V1_ServiceSpec {
        var spec = spec
        if spec.driver.isEmpty { spec.driver = "oci" }
        if let policy = BalancingPolicy(named: spec.lbPolicy) { spec.lbPolicy = policy.rawValue }
        if let mode = ProxyMode(named: spec.lbMode) { spec.lbMode = mode.rawValue }
        spec.loadBalancer = normalized(spec.loadBalancer)
        for index in spec.ports.indices where spec.ports[index].publishMode.isEmpty { spec.ports[index].publishMode = "ingress" }
        if spec.restartPolicy.condition.isEmpty { spec.restartPolicy.condition = "any" }
        if spec.restartPolicy.delayMs == 0 { spec.restartPolicy.delayMs = 1_000 }
        spec.updateConfig = normalized(spec.updateConfig)
        spec.rollbackConfig = normalized(spec.rollbackConfig)
        if spec.hasHealthCheck { spec.healthCheck = normalized(spec.healthCheck) }
        if spec.hasReadinessCheck { spec.readinessCheck = normalized(spec.readinessCheck) }
        if spec.hasAutoscale { spec.autoscale = normalized(spec.autoscale) }
        return spec
    }

    /// The autoscaler's windows filled in when not given: 10 s up, 60 s down.
    public static func normalized(_ autoscale: Flotilla_V1_AutoscaleSpec) -> Flotilla_V1_AutoscaleSpec {
        var autoscale = autoscale
        if !autoscale.hasScaleUpWindowMs { autoscale.scaleUpWindowMs = AutoscaleDefaults.scaleUpWindowMs }
        if !autoscale.hasScaleDownWindowMs { autoscale.scaleDownWindowMs = AutoscaleDefaults.scaleDownWindowMs }
        return autoscale
    }

    /// `replicas` moved into the autoscaler's bounds [min, max] (unchanged when they hold it already).
    public static func replicas(_ replicas: UInt32, within autoscale: Flotilla_V1_AutoscaleSpec) -> UInt32 {
        Swift.min(Swift.max(replicas, autoscale.min), Swift.max(autoscale.max, autoscale.min))
    }

    /// The load balancer's defaults: 2 retries, connect within 5 s, idle connections closed after 60 s, a
    /// response started within 30 s (http), 10 s to drain; a service scaled to zero holds up to 1024
    /// connections per node and port, each up to 30 s.
    public static func normalized(_ balancer: Flotilla_V1_LoadBalancerSpec) -> Flotilla_V1_LoadBalancerSpec {
        var balancer = balancer
        if !balancer.hasRetries { balancer.retries = LoadBalancerDefaults.retries }
        if balancer.connectTimeoutMs == 0 { balancer.connectTimeoutMs = LoadBalancerDefaults.connectTimeoutMs }
        if balancer.idleTimeoutMs == 0 { balancer.idleTimeoutMs = LoadBalancerDefaults.idleTimeoutMs }
        if balancer.requestTimeoutMs == 0 { balancer.requestTimeoutMs = LoadBalancerDefaults.requestTimeoutMs }
        if balancer.drainTimeoutMs == 0 { balancer.drainTimeoutMs = LoadBalancerDefaults.drainTimeoutMs }
        if balancer.holdTimeoutMs == 0 { balancer.holdTimeoutMs = LoadBalancerDefaults.holdTimeoutMs }
        if balancer.holdQueueLimit == 0 { balancer.holdQueueLimit = LoadBalancerDefaults.holdQueueLimit }
        return balancer
    }

    /// What a port's traffic is: its own protocol, or the service's mode when it names none.
    public static func effectiveProtocol(of port: Flotilla_V1_PortSpec, in spec: Flotilla_V1_ServiceSpec) -> String {
        if !port.protocol.isEmpty { return port.protocol }
        return ProxyMode(named: spec.lbMode)?.rawValue ?? ProxyMode.tcp.rawValue
    }

    /// A check every 5 s with a 2 s timeout, 3 failures in a row deciding.
    static func normalized(_ check: Flotilla_V1_HealthCheck) -> Flotilla_V1_HealthCheck {
        var check = check
        if check.intervalMs == 0 { check.intervalMs = 5_000 }
        if check.timeoutMs == 0 { check.timeoutMs = 2_000 }
        if check.retries == 0 { check.retries = 3 }
        return check
    }

    /// What a task runs, as a short stable digest: the spec without the fields that change no task (replicas and
    /// the autoscaler's settings, update and rollback settings, and the load balancer's: mode, policy, settings,
    /// ports' protocols).
    /// Equal digests mean a task need not be replaced.
    public static func taskDigest(_ spec: Flotilla_V1_ServiceSpec) -> String {
        var relevant = normalized(spec)
        relevant.replicas = 0
        relevant.clearAutoscale()
        relevant.clearUpdateConfig()
        relevant.clearRollbackConfig()
        relevant.lbPolicy = ""
        relevant.lbMode = ""
        relevant.clearLoadBalancer()
        for index in relevant.ports.indices { relevant.ports[index].protocol = "" }
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in relevant.storeBytes {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01B3
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func normalized(_ update: Flotilla_V1_UpdateConfig) -> Flotilla_V1_UpdateConfig {
        var update = update
        if update.order.isEmpty { update.order = "stop-first" }
        if update.failureAction.isEmpty { update.failureAction = "pause" }
        if update.monitorMs == 0 { update.monitorMs = 5_000 }
        if update.parallelism == 0 && update.delayMs == 0 && update.maxFailureRatio == 0 { update.parallelism = 1 }
        return update
    }

    /// Everything wrong with `spec`, in field order; empty when it is valid.
    public static func problems(in spec: Flotilla_V1_ServiceSpec) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func check(_ condition: Bool, _ field: String, _ message: @autoclosure () -> String) {
            if !condition { problems.append(SpecProblem(field, message())) }
        }
        check(isDNSLabel(spec.name), "name", "'\(spec.name)' must be 1 to \(maxNameLength) lowercase letters, digits and '-', starting with a letter and not ending with '-'")
        check(spec.driver.isEmpty || drivers.contains(spec.driver), "driver", "'\(spec.driver)' is not a driver; use \(drivers.joined(separator: " or "))")
        if spec.driver.isEmpty || spec.driver == "oci" {
            check(!spec.image.isEmpty, "image", "an oci service needs an image (e.g. registry.local:5000/hello:1)")
        } else {
            check(!spec.command.isEmpty, "command", "a process service needs a command")
        }
        check(!spec.image.contains(where: \.isWhitespace), "image", "'\(spec.image)' may not contain spaces")
        check(!spec.command.contains("\0") && spec.args.allSatisfy { !$0.contains("\0") }, "command", "may not contain NUL characters")
        var names: Set<String> = []
        for (index, variable) in spec.env.enumerated() {
            check(isEnvName(variable.name), "env[\(index)].name", "'\(variable.name)' is not a variable name (letters, digits and '_', not starting with a digit)")
            check(!variable.value.contains("\0"), "env[\(index)].value", "may not contain NUL characters")
            check(names.insert(variable.name).inserted, "env[\(index)].name", "\(variable.name) is set twice")
        }
        switch spec.mode {
        case .replicated:
            check(spec.replicas <= maxReplicas, "replicas", "\(spec.replicas) is more than the limit of \(maxReplicas)")
        case .global:
            check(spec.replicas == 0, "replicas", "a global service runs one task per eligible node; do not set replicas")
        case .UNRECOGNIZED(let value):
            problems.append(SpecProblem("mode", "\(value) is not a mode; use replicated or global"))
        }
        let resources = spec.resources
        if resources.cpuLimitMillis > 0 && resources.cpuReservationMillis > resources.cpuLimitMillis {
            problems.append(SpecProblem("resources.cpu_limit_millis", "\(resources.cpuLimitMillis) is below the reservation \(resources.cpuReservationMillis)"))
        }
        if resources.memoryLimitBytes > 0 && resources.memoryReservationBytes > resources.memoryLimitBytes {
            problems.append(SpecProblem("resources.memory_limit_bytes", "\(resources.memoryLimitBytes) is below the reservation \(resources.memoryReservationBytes)"))
        }
        if resources.memoryLimitBytes > 0 {
            check(resources.memoryLimitBytes >= 4 << 20, "resources.memory_limit_bytes", "\(resources.memoryLimitBytes) bytes is too little to run anything; at least 4 MiB")
        }
        for (index, constraint) in spec.constraints.enumerated() {
            if let problem = PlacementConstraint.parse(constraint).problem {
                problems.append(SpecProblem("constraints[\(index)]", problem))
            }
        }
        if !spec.spreadOver.isEmpty {
            check(spec.spreadOver.hasPrefix("node.labels.") && spec.spreadOver.count > "node.labels.".count,
                  "spread_over", "'\(spec.spreadOver)' must name a node label: node.labels.KEY")
        }
        if spec.mode == .global {
            check(spec.maxReplicasPerNode == 0, "max_replicas_per_node", "a global service runs one task per node already")
        }
        var published: Set<UInt32> = []
        var targets: Set<UInt32> = []
        for (index, port) in spec.ports.enumerated() {
            check((1...65_535).contains(port.targetPort), "ports[\(index)].target_port", "\(port.targetPort) is not a port (1-65535)")
            check(port.publishedPort <= 65_535, "ports[\(index)].published_port", "\(port.publishedPort) is not a port (1-65535)")
            check(port.protocol.isEmpty || protocols.contains(port.protocol), "ports[\(index)].protocol", "'\(port.protocol)' is not a protocol; use tcp or http")
            check(["", "ingress", "host"].contains(port.publishMode), "ports[\(index)].publish_mode", "'\(port.publishMode)' is not a publish mode; use ingress or host")
            if port.publishMode == "host" {
                check(port.publishedPort != 0, "ports[\(index)].published_port", "a host-mode port must name the port to publish on the node")
            }
            check(targets.insert(port.targetPort).inserted, "ports[\(index)].target_port", "\(port.targetPort) is listed twice")
            if port.publishedPort != 0 {
                check(published.insert(port.publishedPort).inserted, "ports[\(index)].published_port", "\(port.publishedPort) is published twice")
            }
        }
        check(BalancingPolicy(named: spec.lbPolicy) != nil, "lb_policy", "'\(spec.lbPolicy)' is not a policy; use one of \(policies.joined(separator: ", "))")
        check(ProxyMode(named: spec.lbMode) != nil, "lb_mode", "'\(spec.lbMode)' is not a load-balancer mode; use \(modes.joined(separator: " or "))")
        if spec.hasLoadBalancer { problems += loadBalancerProblems(spec.loadBalancer) }
        if spec.hasHealthCheck { problems += checkProblems(spec.healthCheck, field: "health_check", ports: spec.ports) }
        if spec.hasReadinessCheck { problems += checkProblems(spec.readinessCheck, field: "readiness_check", ports: spec.ports) }
        if spec.hasAutoscale { problems += autoscaleProblems(spec.autoscale, in: spec) }
        check(["", "bridge", "host"].contains(spec.network), "network", "'\(spec.network)' is not a network mode; use bridge or host")
        check(spec.network != "bridge" || spec.driver != "process", "network", "the process driver runs tasks on the host's network; use network host or the oci driver")
        check(spec.stopGracePeriodMs <= 3_600_000, "stop_grace_period_ms", "\(spec.stopGracePeriodMs) ms is more than an hour")
        let restart = spec.restartPolicy
        check(restart.condition.isEmpty || restartConditions.contains(restart.condition), "restart_policy.condition", "'\(restart.condition)' is not a condition; use any, on-failure or none")
        problems += updateProblems(spec.updateConfig, field: "update_config")
        problems += updateProblems(spec.rollbackConfig, field: "rollback_config")
        return problems
    }

    /// A health or readiness check: exactly one kind, an HTTP path that is a path, a port to reach, a timeout
    /// shorter than the interval.
    static func checkProblems(_ check: Flotilla_V1_HealthCheck, field: String, ports: [Flotilla_V1_PortSpec]) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func require(_ condition: Bool, _ name: String, _ message: String) {
            if !condition { problems.append(SpecProblem(name, message)) }
        }
        let kinds = [!check.command.isEmpty, !check.httpPath.isEmpty, check.tcp].filter { $0 }.count
        require(kinds == 1, field, "set exactly one of command, http_path and tcp")
        if !check.httpPath.isEmpty {
            require(check.httpPath.hasPrefix("/"), field + ".http_path", "'\(check.httpPath)' must start with '/'")
        }
        if !check.httpPath.isEmpty || check.tcp {
            require(!ports.isEmpty, field, "an HTTP or TCP check needs a port to check")
        }
        if check.intervalMs > 0 && check.timeoutMs > 0 {
            require(check.timeoutMs < check.intervalMs, field + ".timeout_ms", "\(check.timeoutMs) ms must be less than the interval (\(check.intervalMs) ms)")
        }
        return problems
    }

    /// The load balancer's settings: a sane number of retries, timeouts that are not absurdly long.
    static func loadBalancerProblems(_ balancer: Flotilla_V1_LoadBalancerSpec) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func limit(_ value: UInt32, _ field: String, _ most: UInt32, _ what: String) {
            if value > most { problems.append(SpecProblem("load_balancer.\(field)", "\(value) ms is more than \(what)")) }
        }
        if balancer.retries > LoadBalancerDefaults.maxRetries {
            problems.append(SpecProblem(
                "load_balancer.retries",
                "\(balancer.retries) is more than \(LoadBalancerDefaults.maxRetries); a connection that \(LoadBalancerDefaults.maxRetries + 1) backends refused is better failed fast"))
        }
        let hour: UInt32 = 3_600_000
        limit(balancer.connectTimeoutMs, "connect_timeout_ms", hour, "an hour")
        limit(balancer.idleTimeoutMs, "idle_timeout_ms", 24 * hour, "a day")
        limit(balancer.requestTimeoutMs, "request_timeout_ms", hour, "an hour")
        limit(balancer.drainTimeoutMs, "drain_timeout_ms", hour, "an hour")
        limit(balancer.slowStartMs, "slow_start_ms", hour, "an hour")
        // A held client waits on an open socket: minutes at most, and a bounded number of them per port.
        limit(balancer.holdTimeoutMs, "hold_timeout_ms", LoadBalancerDefaults.maxHoldTimeoutMs,
              "10 minutes; a client should not wait longer for a replica to start")
        if balancer.holdQueueLimit > LoadBalancerDefaults.maxHoldQueueLimit {
            problems.append(SpecProblem(
                "load_balancer.hold_queue_limit",
                "\(balancer.holdQueueLimit) is more than \(LoadBalancerDefaults.maxHoldQueueLimit) held connections per node and port; each holds a socket open"))
        }
        return problems
    }

    /// The autoscaler's settings: bounds in order, at least one target, a CPU target only with a CPU
    /// reservation to be a percentage of, windows of at most an hour, and a replicated service.
    static func autoscaleProblems(_ autoscale: Flotilla_V1_AutoscaleSpec, in spec: Flotilla_V1_ServiceSpec) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        func check(_ condition: Bool, _ field: String, _ message: @autoclosure () -> String) {
            if !condition { problems.append(SpecProblem(field, message())) }
        }
        check(spec.mode == .replicated, "autoscale", "only a replicated service can be autoscaled; remove autoscale or use mode replicated")
        check(autoscale.max >= 1, "autoscale.max", "must be at least 1 (the most replicas the autoscaler may run)")
        check(autoscale.max <= maxReplicas, "autoscale.max", "\(autoscale.max) is more than the limit of \(maxReplicas)")
        check(autoscale.min <= autoscale.max, "autoscale.min", "\(autoscale.min) is more than max \(autoscale.max)")
        check(autoscale.targetRps > 0 || autoscale.targetConnections > 0 || autoscale.targetCpuPercent > 0, "autoscale",
              "set at least one target: target_rps, target_connections or target_cpu_percent")
        if autoscale.targetCpuPercent > 0 {
            check(spec.resources.cpuReservationMillis > 0, "autoscale.target_cpu_percent",
                  "is a percentage of the CPU reservation, and the service reserves none; reserve CPU (--reserve-cpu) or use another target")
        }
        let hour = AutoscaleDefaults.maxWindowMs
        check(autoscale.scaleUpWindowMs <= hour, "autoscale.scale_up_window_ms", "\(autoscale.scaleUpWindowMs) ms is more than an hour")
        check(autoscale.scaleDownWindowMs <= hour, "autoscale.scale_down_window_ms", "\(autoscale.scaleDownWindowMs) ms is more than an hour")
        return problems
    }

    static func updateProblems(_ update: Flotilla_V1_UpdateConfig, field: String) -> [SpecProblem] {
        var problems: [SpecProblem] = []
        if !update.order.isEmpty && !updateOrders.contains(update.order) {
            problems.append(SpecProblem("\(field).order", "'\(update.order)' is not an order; use stop-first or start-first"))
        }
        if !update.failureAction.isEmpty && !failureActions.contains(update.failureAction) {
            problems.append(SpecProblem("\(field).failure_action", "'\(update.failureAction)' is not an action; use pause, rollback or continue"))
        }
        if !(0...1).contains(update.maxFailureRatio) || update.maxFailureRatio.isNaN {
            problems.append(SpecProblem("\(field).max_failure_ratio", "\(update.maxFailureRatio) must be between 0 and 1"))
        }
        return problems
    }

    static func isDNSLabel(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...maxNameLength).contains(bytes.count), (0x61...0x7A).contains(bytes[0]), bytes.last != 0x2D else { return false }
        return bytes.allSatisfy { (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2D }
    }

    static func isEnvName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, !(0x30...0x39).contains(first) else { return false }
        return bytes.allSatisfy { (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5F }
    }
}

/// The load balancer's defaults and limits for a service (`LoadBalancerSpec`, service.proto).
public enum LoadBalancerDefaults {
    /// Other backends a failed connection is tried on when the spec does not say.
    public static let retries: UInt32 = 2
    /// The most retries a spec may ask for.
    public static let maxRetries: UInt32 = 10
    public static let connectTimeoutMs: UInt32 = 5_000
    public static let idleTimeoutMs: UInt32 = 60_000
    public static let requestTimeoutMs: UInt32 = 30_000
    public static let drainTimeoutMs: UInt32 = 10_000
    /// A service scaled to zero: how long a connection waits for a replica, and how many wait per node and port.
    public static let holdTimeoutMs: UInt32 = 30_000
    public static let holdQueueLimit: UInt32 = 1_024
    /// The longest hold a spec may ask for, and the largest queue.
    public static let maxHoldTimeoutMs: UInt32 = 600_000
    public static let maxHoldQueueLimit: UInt32 = 65_536
}

/// The autoscaler's defaults and limits (`AutoscaleSpec`, service.proto).
public enum AutoscaleDefaults {
    /// Load must stay high this long before a scale-up: issue 8 asks for 0 to 15 s; 10 s lets a spike pass and
    /// still answers a rise well inside the 20 s it allows.
    public static let scaleUpWindowMs: UInt32 = 10_000
    /// Load must stay low this long before a scale-down.
    public static let scaleDownWindowMs: UInt32 = 60_000
    /// The longest window a spec may ask for (Kubernetes' HPA has the same limit).
    public static let maxWindowMs: UInt32 = 3_600_000
}

/// A placement constraint: a node attribute compared with `==` or `!=`.
public struct PlacementConstraint: Sendable, Hashable {
    public enum Attribute: Sendable, Hashable {
        case label(String)
        case name
        case role
    }

    public var attribute: Attribute
    public var equals: Bool
    public var value: String

    public init(attribute: Attribute, equals: Bool, value: String) {
        self.attribute = attribute
        self.equals = equals
        self.value = value
    }

    /// Parses "node.labels.zone==a", "node.name!=n1", "node.role==agent"; the problem is set when it does not.
    public static func parse(_ text: String) -> (constraint: PlacementConstraint?, problem: String?) {
        let isNotEqual = text.contains("!=")
        let separator = isNotEqual ? "!=" : "=="
        let parts = text.split(separator: separator, maxSplits: 1, omittingEmptySubsequences: false).map {
            String($0).trimmingSpaces
        }
        guard parts.count == 2, !parts[1].isEmpty else {
            return (nil, "'\(text)' is not a constraint; write node.labels.KEY==VALUE, node.name!=NAME or node.role==agent")
        }
        let attribute: Attribute
        switch parts[0] {
        case "node.name": attribute = .name
        case "node.role": attribute = .role
        case let key where key.hasPrefix("node.labels.") && key.count > "node.labels.".count:
            attribute = .label(String(key.dropFirst("node.labels.".count)))
        default:
            return (nil, "'\(parts[0])' is not a node attribute; use node.labels.KEY, node.name or node.role")
        }
        return (PlacementConstraint(attribute: attribute, equals: !isNotEqual, value: parts[1]), nil)
    }
}

extension String {
    var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
