public import ClusterStore
public import Messages
import Yams

/// What is wrong with a service file, and where: `services.web.ports[1]: 99999 is not a port`.
public struct ServiceFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var message: String

    public init(_ path: String, _ message: String) {
        self.path = path
        self.message = message
    }

    public var description: String { path.isEmpty ? message : "\(path): \(message)" }
}

/// Service files for `flotilla apply -f`: YAML holding one service (with `name:`) or many (under `services:`,
/// keyed by name). Every key is checked — a misspelt one is an error naming it, never silently ignored —
/// and values are converted with their units (`5s`, `500ms`, `256M`, `0.5` cores or `500m`).
///
/// ```yaml
/// services:
///   hello:
///     driver: process
///     command: python3 -m http.server $PORT
///     replicas: 3
///     ports: ["8080:8000/http"]          # "9000:9000/tcp,mode=host": bound on the task's node only
///     env: {GREETING: hi}
///     constraints: ["node.labels.zone==a"]
///     spread_over: node.labels.zone
///     resources: {reserve_cpu: 0.5, reserve_memory: 256M, limit_memory: 512M, limit_pids: 100}
///     health_check: {http: /, interval: 5s, timeout: 2s, retries: 3}   # or command: …, or tcp: true
///     readiness_check: {http: /ready, interval: 2s}                     # not ready: no traffic, no restart
///     restart: {condition: on-failure, delay: 1s, max_attempts: 10, window: 10m}
///     stop_grace_period: 30s
///     network: host                      # oci default: bridge (an address on the node's subnet)
///     update: {parallelism: 2, order: start-first, failure_action: rollback, monitor: 10s}
///     lb_policy: least-conn              # round-robin (default), least-conn, ip-hash, random, p2c
///     lb_mode: http                      # tcp (default) or http; a port's /tcp or /http overrides it
///     load_balancer: {retries: 2, connect_timeout: 5s, idle_timeout: 60s, request_timeout: 30s, drain_timeout: 10s,
///                     proxy_protocol: false, backend_max_connections: 0, slow_start: 0s, prefer_local: false,
///                     hold_timeout: 30s, hold_queue_limit: 1024}   # the last two: while scaled to zero (autoscale min 0)
///     autoscale: {min: 2, max: 10, target_rps: 200, target_conns: 50, target_cpu: 70, up_window: 10s, down_window: 60s}
/// ```
public enum ServiceFile {
    static let serviceKeys: Set<String> = [
        "name", "image", "driver", "command", "args", "env", "mode", "replicas", "resources", "constraints", "spread_over",
        "max_replicas_per_node", "ports", "lb_policy", "lb_mode", "load_balancer", "health_check", "readiness_check", "network", "read_only",
        "stop_grace_period", "restart", "update", "rollback", "autoscale",
    ]

    /// The keys of `autoscale:` (and of `--autoscale`, written with '-' there).
    static let autoscaleKeys: Set<String> = ["min", "max", "target_rps", "target_conns", "target_cpu", "up_window", "down_window"]

    /// The `autoscale:` section over `base`: only the keys given change. Without a base (a new policy), min is 1.
    static func autoscale(_ section: Reader, over base: Flotilla_V1_AutoscaleSpec?) throws(ServiceFileError) -> Flotilla_V1_AutoscaleSpec {
        try section.allowOnly(autoscaleKeys)
        var autoscale = base ?? Flotilla_V1_AutoscaleSpec()
        if base == nil { autoscale.min = 1 }
        if let min = try section.unsigned("min") { autoscale.min = min }
        if let max = try section.unsigned("max") { autoscale.max = max }
        if let rps = try section.unsigned("target_rps") { autoscale.targetRps = rps }
        if let connections = try section.unsigned("target_conns") { autoscale.targetConnections = connections }
        if let cpu = try section.unsigned("target_cpu") { autoscale.targetCpuPercent = cpu }
        if let window = try section.duration("up_window") { autoscale.scaleUpWindowMs = window }
        if let window = try section.duration("down_window") { autoscale.scaleDownWindowMs = window }
        return autoscale
    }

    /// `--autoscale min=2,max=10,target-rps=200,target-conns=50,target-cpu=70,up-window=10s,down-window=60s` over
    /// `base` (a service's current policy on update: only the keys given change; nil: a new policy, min 1); nil
    /// for `off`. A target of 0 removes it.
    public static func autoscale(_ text: String, over base: Flotilla_V1_AutoscaleSpec?) throws(ServiceFileError) -> Flotilla_V1_AutoscaleSpec? {
        guard text != "off" else { return nil }
        func dashed(_ text: String) -> String { String(text.map { $0 == "_" ? "-" : $0 }) }
        var fields: [String: Any] = [:]
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ServiceFileError("", "'\(pair)' is not KEY=VALUE; write e.g. min=2,max=10,target-rps=200, or off")
            }
            let key = String(parts[0].map { $0 == "-" ? "_" : $0 })
            if let number = Int(parts[1]) { fields[key] = number } else { fields[key] = parts[1] }
        }
        guard !fields.isEmpty else { throw ServiceFileError("", "is empty; write e.g. min=2,max=10,target-rps=200, or off") }
        do throws(ServiceFileError) {
            return try autoscale(Reader(fields: fields, path: ""), over: base)
        } catch {
            throw ServiceFileError(dashed(error.path), dashed(error.message))
        }
    }

    /// A file's spec for a service that exists: with autoscale, the count the autoscaler chose stays (moved into
    /// the file's [min, max]), so applying a file again does not undo its work.
    public static func keepingAutoscaledReplicas(_ spec: Flotilla_V1_ServiceSpec, current: Flotilla_V1_ServiceSpec) -> Flotilla_V1_ServiceSpec {
        guard spec.hasAutoscale else { return spec }
        var spec = spec
        spec.replicas = ServiceSpecRules.replicas(current.replicas, within: spec.autoscale)
        return spec
    }

    /// The `load_balancer:` section: every key optional, durations with units; `retries: 0` means none (an
    /// absent key, the default of 2).
    static func loadBalancer(_ section: Reader) throws(ServiceFileError) -> Flotilla_V1_LoadBalancerSpec {
        var section = section
        try section.allowOnly([
            "retries", "connect_timeout", "idle_timeout", "request_timeout", "drain_timeout", "proxy_protocol",
            "backend_max_connections", "slow_start", "prefer_local", "hold_timeout", "hold_queue_limit",
        ])
        var balancer = Flotilla_V1_LoadBalancerSpec()
        if let retries = try section.unsigned("retries") { balancer.retries = retries }
        balancer.connectTimeoutMs = try section.duration("connect_timeout") ?? 0
        balancer.idleTimeoutMs = try section.duration("idle_timeout") ?? 0
        balancer.requestTimeoutMs = try section.duration("request_timeout") ?? 0
        balancer.drainTimeoutMs = try section.duration("drain_timeout") ?? 0
        balancer.proxyProtocol = try section.bool("proxy_protocol") ?? false
        balancer.backendMaxConnections = try section.unsigned("backend_max_connections") ?? 0
        balancer.slowStartMs = try section.duration("slow_start") ?? 0
        balancer.preferLocal = try section.bool("prefer_local") ?? false
        balancer.holdTimeoutMs = try section.duration("hold_timeout") ?? 0
        balancer.holdQueueLimit = try section.unsigned("hold_queue_limit") ?? 0
        return balancer
    }

    /// A health or readiness check section: one of command, http and tcp, with its timings.
    static func check(_ section: Reader) throws(ServiceFileError) -> Flotilla_V1_HealthCheck {
        var section = section
        try section.allowOnly(["command", "http", "tcp", "interval", "timeout", "retries", "start_period"])
        var check = Flotilla_V1_HealthCheck()
        if let command = try section.string("command") { check.command = ["/bin/sh", "-c", command] }
        check.httpPath = try section.string("http") ?? ""
        check.tcp = try section.bool("tcp") ?? false
        check.intervalMs = try section.duration("interval") ?? 0
        check.timeoutMs = try section.duration("timeout") ?? 0
        check.retries = try section.unsigned("retries") ?? 0
        check.startPeriodMs = try section.duration("start_period") ?? 0
        return check
    }

    /// The specs in `text`, in the file's order (sorted by name under `services:`).
    public static func parse(_ text: String) throws(ServiceFileError) -> [Flotilla_V1_ServiceSpec] {
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw ServiceFileError("", "not valid YAML: \(error)")
        }
        guard let root = document as? [String: Any] else {
            throw ServiceFileError("", "the file must hold a service (with name:) or a services: map")
        }
        if let services = root["services"] {
            guard root.count == 1 else {
                throw ServiceFileError("", "with services:, nothing else may be at the top level (found \(root.keys.filter { $0 != "services" }.sorted().joined(separator: ", ")))")
            }
            guard let map = services as? [String: Any], !map.isEmpty else { throw ServiceFileError("services", "must map names to services") }
            var specs: [Flotilla_V1_ServiceSpec] = []
            for name in map.keys.sorted() {
                let path = "services.\(name)"
                guard let fields = map[name] as? [String: Any] else { throw ServiceFileError(path, "must be a map of fields") }
                if let inner = fields["name"] as? String, inner != name {
                    throw ServiceFileError("\(path).name", "'\(inner)' differs from its key '\(name)'")
                }
                specs.append(try spec(fields, name: name, path: path))
            }
            return specs
        }
        guard let name = root["name"] as? String else { throw ServiceFileError("name", "a single service needs a name (or put services under services:)") }
        return [try spec(root, name: name, path: "")]
    }

    static func spec(_ fields: [String: Any], name: String, path: String) throws(ServiceFileError) -> Flotilla_V1_ServiceSpec {
        var reader = Reader(fields: fields, path: path)
        try reader.allowOnly(serviceKeys)
        var spec = Flotilla_V1_ServiceSpec()
        spec.name = name
        spec.image = try reader.string("image") ?? ""
        spec.driver = try reader.string("driver") ?? ""
        spec.command = try reader.string("command") ?? ""
        spec.args = try reader.strings("args") ?? []
        if let env = try reader.map("env") {
            spec.env = try env.keys.sorted().map { (key: String) throws(ServiceFileError) -> Flotilla_V1_EnvVar in
                var variable = Flotilla_V1_EnvVar()
                variable.name = key
                guard let value = env[key].flatMap(Reader.scalarText) else {
                    throw ServiceFileError(reader.at("env.\(key)"), "must be a string, number or boolean")
                }
                variable.value = value
                return variable
            }
        }
        switch try reader.string("mode") {
        case nil, "replicated": spec.mode = .replicated
        case "global": spec.mode = .global
        case let other?: throw ServiceFileError(reader.at("mode"), "'\(other)' is not a mode; use replicated or global")
        }
        let replicas = try reader.unsigned("replicas")
        spec.replicas = replicas ?? (spec.mode == .global ? 0 : 1)
        if var resources = try reader.section("resources") {
            try resources.allowOnly(["reserve_cpu", "reserve_memory", "limit_cpu", "limit_memory", "limit_pids"])
            spec.resources.cpuReservationMillis = try resources.cpu("reserve_cpu") ?? 0
            spec.resources.memoryReservationBytes = try resources.size("reserve_memory") ?? 0
            spec.resources.cpuLimitMillis = try resources.cpu("limit_cpu") ?? 0
            spec.resources.memoryLimitBytes = try resources.size("limit_memory") ?? 0
            spec.resources.pidsLimit = UInt64(try resources.unsigned("limit_pids") ?? 0)
        }
        spec.constraints = try reader.strings("constraints") ?? []
        spec.spreadOver = try reader.string("spread_over") ?? ""
        spec.maxReplicasPerNode = try reader.unsigned("max_replicas_per_node") ?? 0
        if let ports = try reader.strings("ports") {
            spec.ports = try ports.enumerated().map { (index: Int, text: String) throws(ServiceFileError) -> Flotilla_V1_PortSpec in
                guard let port = Reader.port(text) else {
                    throw ServiceFileError(reader.at("ports[\(index)]"), "'\(text)' is not PUBLISHED:TARGET[/tcp|http][,mode=host] or TARGET[/tcp|http]")
                }
                return port
            }
        }
        spec.lbPolicy = try reader.string("lb_policy") ?? ""
        spec.lbMode = try reader.string("lb_mode") ?? ""
        if let balancer = try reader.section("load_balancer") { spec.loadBalancer = try Self.loadBalancer(balancer) }
        if let autoscale = try reader.section("autoscale") {
            spec.autoscale = try Self.autoscale(autoscale, over: nil)
            if replicas == nil && spec.mode == .replicated { spec.replicas = ServiceSpecRules.replicas(spec.replicas, within: spec.autoscale) }
        }
        if let health = try reader.section("health_check") { spec.healthCheck = try Self.check(health) }
        if let readiness = try reader.section("readiness_check") { spec.readinessCheck = try Self.check(readiness) }
        spec.network = try reader.string("network") ?? ""
        spec.readOnlyRoot = try reader.bool("read_only") ?? false
        spec.stopGracePeriodMs = try reader.duration("stop_grace_period") ?? 0
        if var restart = try reader.section("restart") {
            try restart.allowOnly(["condition", "delay", "max_attempts", "window"])
            spec.restartPolicy.condition = try restart.string("condition") ?? ""
            spec.restartPolicy.delayMs = try restart.duration("delay") ?? 0
            spec.restartPolicy.maxAttempts = try restart.unsigned("max_attempts") ?? 0
            spec.restartPolicy.windowMs = try restart.duration("window") ?? 0
        }
        for (key, keyPath) in [("update", \Flotilla_V1_ServiceSpec.updateConfig), ("rollback", \Flotilla_V1_ServiceSpec.rollbackConfig)] {
            guard var section = try reader.section(key) else { continue }
            try section.allowOnly(["parallelism", "delay", "order", "failure_action", "monitor", "max_failure_ratio"])
            var config = Flotilla_V1_UpdateConfig()
            config.parallelism = try section.unsigned("parallelism") ?? 0
            config.delayMs = try section.duration("delay") ?? 0
            config.order = try section.string("order") ?? ""
            config.failureAction = try section.string("failure_action") ?? ""
            config.monitorMs = try section.duration("monitor") ?? 0
            config.maxFailureRatio = try section.double("max_failure_ratio") ?? 0
            spec[keyPath: keyPath] = config
        }
        let problems = ServiceSpecRules.problems(in: spec)
        if let first = problems.first {
            let prefix = path.isEmpty ? "" : path + "."
            throw ServiceFileError(prefix + first.field, problems.map { $0.field == first.field ? $0.message : "\($0.field): \($0.message)" }.joined(separator: "; "))
        }
        return spec
    }

    /// A port as people write it: "8080:80/http", "80", "80/tcp"; nil when it is not one.
    public static func port(_ text: String) -> Flotilla_V1_PortSpec? { Reader.port(text) }

    /// A size as people write it: "256M", "1G", "512K", or bytes; nil when it is not one.
    public static func size(_ text: String) -> UInt64? {
        let value: Any = Int(text) ?? text
        return try? Reader(fields: ["v": value], path: "").size("v")
    }

    /// A duration as people write it: "500ms", "5s", "1m"; nil when it is not one.
    public static func milliseconds(_ text: String) -> UInt32? {
        try? Reader(fields: ["v": text], path: "").duration("v")
    }

    /// The spec fields (by their YAML names) whose values differ between two specs, defaults filled in.
    public static func differences(_ old: Flotilla_V1_ServiceSpec, _ new: Flotilla_V1_ServiceSpec) -> [String] {
        let a = ServiceSpecRules.normalized(old)
        let b = ServiceSpecRules.normalized(new)
        var changed: [String] = []
        func check(_ name: String, _ same: Bool) { if !same { changed.append(name) } }
        check("image", a.image == b.image)
        check("driver", a.driver == b.driver)
        check("command", a.command == b.command)
        check("args", a.args == b.args)
        check("env", a.env == b.env)
        check("mode", a.mode == b.mode)
        check("replicas", a.replicas == b.replicas)
        check("resources", a.resources == b.resources)
        check("constraints", a.constraints == b.constraints)
        check("spread_over", a.spreadOver == b.spreadOver)
        check("max_replicas_per_node", a.maxReplicasPerNode == b.maxReplicasPerNode)
        check("ports", a.ports == b.ports)
        check("lb_policy", a.lbPolicy == b.lbPolicy)
        check("lb_mode", a.lbMode == b.lbMode)
        check("load_balancer", a.loadBalancer == b.loadBalancer)
        check("autoscale", a.autoscale == b.autoscale)
        check("health_check", a.healthCheck == b.healthCheck)
        check("restart", a.restartPolicy == b.restartPolicy)
        check("update", a.updateConfig == b.updateConfig)
        check("rollback", a.rollbackConfig == b.rollbackConfig)
        return changed
    }
}

/// Typed access to one YAML map, with errors that name the key path.
struct Reader {
    let fields: [String: Any]
    let path: String

    func at(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func allowOnly(_ keys: Set<String>) throws(ServiceFileError) {
        if let unknown = fields.keys.sorted().first(where: { !keys.contains($0) }) {
            throw ServiceFileError(at(unknown), "unknown field; expected one of \(keys.sorted().joined(separator: ", "))")
        }
    }

    static func scalarText(_ value: Any) -> String? {
        switch value {
        case let text as String: text
        case let number as Int: String(number)
        case let number as Double: String(number)
        case let flag as Bool: String(flag)
        default: nil
        }
    }

    func string(_ key: String) throws(ServiceFileError) -> String? {
        guard let value = fields[key] else { return nil }
        guard let text = value as? String ?? (value as? Int).map(String.init) else { throw ServiceFileError(at(key), "must be a string") }
        return text
    }

    func strings(_ key: String) throws(ServiceFileError) -> [String]? {
        guard let value = fields[key] else { return nil }
        guard let list = value as? [Any] else { throw ServiceFileError(at(key), "must be a list") }
        var result: [String] = []
        for (index, item) in list.enumerated() {
            guard let text = Self.scalarText(item) else { throw ServiceFileError(at("\(key)[\(index)]"), "must be a string") }
            result.append(text)
        }
        return result
    }

    func map(_ key: String) throws(ServiceFileError) -> [String: Any]? {
        guard let value = fields[key] else { return nil }
        guard let map = value as? [String: Any] else { throw ServiceFileError(at(key), "must be a map") }
        return map
    }

    func section(_ key: String) throws(ServiceFileError) -> Reader? {
        try map(key).map { Reader(fields: $0, path: at(key)) }
    }

    func bool(_ key: String) throws(ServiceFileError) -> Bool? {
        guard let value = fields[key] else { return nil }
        guard let flag = value as? Bool else { throw ServiceFileError(at(key), "must be true or false") }
        return flag
    }

    func unsigned(_ key: String) throws(ServiceFileError) -> UInt32? {
        guard let value = fields[key] else { return nil }
        guard let number = value as? Int, number >= 0, number <= Int(UInt32.max) else {
            throw ServiceFileError(at(key), "must be a whole number ≥ 0")
        }
        return UInt32(number)
    }

    func double(_ key: String) throws(ServiceFileError) -> Double? {
        guard let value = fields[key] else { return nil }
        guard let number = value as? Double ?? (value as? Int).map(Double.init) else { throw ServiceFileError(at(key), "must be a number") }
        return number
    }

    /// "5s", "500ms", "1m", or a number of milliseconds.
    func duration(_ key: String) throws(ServiceFileError) -> UInt32? {
        guard let value = fields[key] else { return nil }
        if let number = value as? Int, number >= 0 { return UInt32(clamping: number) }
        if let text = value as? String {
            for (suffix, factor) in [("ms", 1.0), ("s", 1_000.0), ("m", 60_000.0)] where text.hasSuffix(suffix) {
                if let number = Double(text.dropLast(suffix.count)), number >= 0 { return UInt32(clamping: Int(number * factor)) }
            }
        }
        throw ServiceFileError(at(key), "'\(value)' is not a duration (e.g. 500ms, 5s, 1m)")
    }

    /// "256M", "1G", "512K", or bytes.
    func size(_ key: String) throws(ServiceFileError) -> UInt64? {
        guard let value = fields[key] else { return nil }
        if let number = value as? Int, number >= 0 { return UInt64(number) }
        if let text = (value as? String)?.uppercased(), let unit = text.last {
            let factors: [Character: Double] = ["K": 1_024, "M": 1_048_576, "G": 1_073_741_824]
            if let factor = factors[unit], let number = Double(text.dropLast()), number >= 0 { return UInt64(number * factor) }
        }
        throw ServiceFileError(at(key), "'\(value)' is not a size (e.g. 256M, 1G)")
    }

    /// Cores as a number (0.5) or millicores as "500m".
    func cpu(_ key: String) throws(ServiceFileError) -> UInt64? {
        guard let value = fields[key] else { return nil }
        if let number = value as? Double ?? (value as? Int).map(Double.init), number >= 0 { return UInt64(number * 1_000) }
        if let text = value as? String, text.hasSuffix("m"), let millis = UInt64(text.dropLast()) { return millis }
        throw ServiceFileError(at(key), "'\(value)' is not a CPU amount (cores, e.g. 0.5, or millicores, e.g. 500m)")
    }

    /// "8080:80/http", "80", "80/tcp", "8080:80/tcp,mode=host".
    static func port(_ text: String) -> Flotilla_V1_PortSpec? {
        var port = Flotilla_V1_PortSpec()
        var options = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let mapping = options.removeFirst()
        for option in options {
            guard option.hasPrefix("mode="), port.publishMode.isEmpty else { return nil }
            port.publishMode = String(option.dropFirst("mode=".count))
        }
        let parts = mapping.split(separator: "/", maxSplits: 1).map(String.init)
        if parts.count == 2 { port.protocol = parts[1] }
        let numbers = parts.first?.split(separator: ":").map { UInt32($0) } ?? []
        switch numbers.count {
        case 1 where numbers[0] != nil: port.targetPort = numbers[0]!
        case 2 where numbers[0] != nil && numbers[1] != nil:
            port.publishedPort = numbers[0]!
            port.targetPort = numbers[1]!
        default: return nil
        }
        return port
    }
}
