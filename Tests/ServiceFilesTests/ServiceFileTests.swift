import ClusterStore
import Messages
import ServiceFiles
import Testing

@Suite("Service files (flotilla apply -f)")
struct ServiceFileTests {
    static let file = """
        services:
          hello:
            driver: process
            command: python3 -m http.server $PORT
            replicas: 3
            ports: ["8080:8000/http", "9100:9100/tcp,mode=host"]
            env: {GREETING: hi, COUNT: 2}
            constraints: ["node.labels.zone==a"]
            spread_over: node.labels.zone
            resources: {reserve_cpu: 0.5, reserve_memory: 256M, limit_cpu: 500m, limit_memory: 1G}
            health_check: {http: /health, interval: 5s, timeout: 500ms, retries: 2}
            restart: {condition: on-failure, delay: 2s}
            update: {parallelism: 2, order: start-first, failure_action: rollback, monitor: 10s, max_failure_ratio: 0.25}
          worker:
            driver: process
            command: ./work
            mode: global
        """

    @Test("a file with several services parses, units and all")
    func parses() throws {
        let specs = try ServiceFile.parse(Self.file)
        #expect(specs.map(\.name) == ["hello", "worker"])
        let hello = specs[0]
        #expect(hello.replicas == 3)
        #expect(hello.ports.first?.publishedPort == 8080 && hello.ports.first?.targetPort == 8000 && hello.ports.first?.protocol == "http")
        #expect(hello.ports.map(\.publishMode) == ["", "host"])
        #expect(hello.env.map(\.name) == ["COUNT", "GREETING"])
        #expect(hello.resources.cpuReservationMillis == 500 && hello.resources.cpuLimitMillis == 500)
        #expect(hello.resources.memoryReservationBytes == 256 << 20 && hello.resources.memoryLimitBytes == 1 << 30)
        #expect(hello.healthCheck.httpPath == "/health" && hello.healthCheck.timeoutMs == 500 && hello.healthCheck.retries == 2)
        #expect(hello.restartPolicy.condition == "on-failure" && hello.restartPolicy.delayMs == 2000)
        #expect(hello.updateConfig.parallelism == 2 && hello.updateConfig.order == "start-first" && hello.updateConfig.monitorMs == 10_000)
        #expect(specs[1].mode == .global && specs[1].replicas == 0)
    }

    @Test("a single service with name: parses too")
    func single() throws {
        let specs = try ServiceFile.parse("name: solo\ndriver: process\ncommand: run\n")
        #expect(specs.map(\.name) == ["solo"])
        #expect(specs[0].replicas == 1)
    }

    @Test("mistakes are reported with the path of the key", arguments: [
        ("services:\n  web:\n    driver: process\n    command: x\n    replicass: 3\n", "services.web.replicass"),
        ("services:\n  web:\n    driver: process\n    command: x\n    ports: [\"99999\"]\n", "services.web.ports[0].target_port"),
        ("services:\n  web:\n    driver: process\n    command: x\n    ports: [\"eighty\"]\n", "services.web.ports[0]"),
        ("services:\n  web:\n    driver: process\n    command: x\n    ports: [\"80,mode=host,mode=host\"]\n", "services.web.ports[0]"),
        ("services:\n  web:\n    driver: process\n    command: x\n    ports: [\"80/tcp,mode=host\"]\n", "services.web.ports[0].published_port"),
        ("services:\n  web:\n    driver: process\n    command: x\n    update: {monitor: soon}\n", "services.web.update.monitor"),
        ("services:\n  web:\n    driver: process\n    command: x\n    resources: {reserve_memory: lots}\n", "services.web.resources.reserve_memory"),
        ("services:\n  Web:\n    driver: process\n    command: x\n", "services.Web.name"),
        ("services:\n  web:\n    driver: process\n    command: x\n    lb_mode: udp\n", "services.web.lb_mode"),
        ("services:\n  web:\n    driver: process\n    command: x\n    lb_policy: fastest\n", "services.web.lb_policy"),
        ("services:\n  web:\n    driver: process\n    command: x\n    load_balancer: {retry: 1}\n", "services.web.load_balancer.retry"),
        ("services:\n  web:\n    driver: process\n    command: x\n    load_balancer: {drain_timeout: later}\n", "services.web.load_balancer.drain_timeout"),
        ("services:\n  web:\n    driver: process\n    command: x\n    load_balancer: {retries: 11}\n", "services.web.load_balancer.retries"),
        ("services:\n  web:\n    driver: process\n    command: x\n    load_balancer: {proxy_protocol: yes please}\n", "services.web.load_balancer.proxy_protocol"),
        ("services:\n  web:\n    driver: process\n    command: x\n    load_balancer: 3\n", "services.web.load_balancer"),
        ("name: a\nservices: {}\n", ""),
        ("- just a list\n", ""),
        ("services:\n  web: [1, 2]\n", "services.web"),
        ("services:\n  web:\n    driver: process\n    command: x\n    autoscale: {max: 3, target_rsp: 1}\n", "services.web.autoscale.target_rsp"),
        ("services:\n  web:\n    driver: process\n    command: x\n    autoscale: {min: 5, max: 2, target_rps: 1}\n", "services.web.autoscale.min"),
        ("services:\n  web:\n    driver: process\n    command: x\n    autoscale: {max: 2}\n", "services.web.autoscale"),
        ("services:\n  web:\n    driver: process\n    command: x\n    autoscale: {max: 2, target_cpu: 70}\n", "services.web.autoscale.target_cpu_percent"),
        ("services:\n  web:\n    driver: process\n    command: x\n    mode: global\n    autoscale: {max: 2, target_rps: 9}\n", "services.web.autoscale"),
        ("services:\n  web:\n    driver: process\n    command: x\n    autoscale: {max: 2, target_rps: 9, down_window: soon}\n", "services.web.autoscale.down_window"),
    ])
    func mistakes(_ text: String, _ path: String) {
        let error = #expect(throws: ServiceFileError.self) { try ServiceFile.parse(text) }
        #expect(error?.path == path, "\(String(describing: error))")
    }

    @Test("differences name the fields that changed, ignoring defaults written out")
    func differences() throws {
        let old = try ServiceFile.parse("name: web\ndriver: process\ncommand: a\nreplicas: 2\n")[0]
        var new = old
        new.replicas = 5
        new.command = "b"
        #expect(ServiceFile.differences(old, new) == ["command", "replicas"])
        var explicit = old
        explicit.lbPolicy = "round-robin"  // the default, written out
        explicit.lbMode = "tcp"
        explicit.loadBalancer.retries = 2
        explicit.loadBalancer.drainTimeoutMs = 10_000
        #expect(ServiceFile.differences(old, explicit).isEmpty)
        var balanced = old
        balanced.lbPolicy = "least-connections"
        balanced.lbMode = "http"
        balanced.loadBalancer.retries = 0
        #expect(ServiceFile.differences(old, balanced) == ["lb_policy", "lb_mode", "load_balancer"])
    }

    @Test("load-balancer settings parse with their units; retries: 0 is kept apart from no retries given")
    func loadBalancer() throws {
        let spec = try ServiceFile.parse("""
            name: web
            driver: process
            command: run
            ports: ["8080:80"]
            lb_policy: ip-hash
            lb_mode: http
            load_balancer:
              retries: 0
              connect_timeout: 1500ms
              idle_timeout: 2m
              request_timeout: 10s
              drain_timeout: 30s
              proxy_protocol: true
              backend_max_connections: 100
              slow_start: 20s
              prefer_local: true
              hold_timeout: 2m
              hold_queue_limit: 50
            """)[0]
        #expect(spec.lbPolicy == "ip-hash" && spec.lbMode == "http")
        let balancer = spec.loadBalancer
        #expect(balancer.hasRetries && balancer.retries == 0)
        #expect(balancer.connectTimeoutMs == 1_500 && balancer.idleTimeoutMs == 120_000 && balancer.requestTimeoutMs == 10_000)
        #expect(balancer.drainTimeoutMs == 30_000 && balancer.slowStartMs == 20_000)
        #expect(balancer.proxyProtocol && balancer.preferLocal && balancer.backendMaxConnections == 100)
        #expect(balancer.holdTimeoutMs == 120_000 && balancer.holdQueueLimit == 50)
        #expect(ServiceSpecRules.effectiveProtocol(of: spec.ports[0], in: spec) == "http")
        let unset = try ServiceFile.parse("name: web\ndriver: process\ncommand: run\nload_balancer: {drain_timeout: 5s}\n")[0]
        #expect(!unset.loadBalancer.hasRetries, "absent: the default applies")
        #expect(ServiceSpecRules.normalized(unset).loadBalancer.retries == 2)
    }

    @Test("autoscale: parses with its units, starts within [min, max] when replicas is not given, and changes no task")
    func autoscale() throws {
        let spec = try ServiceFile.parse("""
            name: web
            driver: process
            command: run
            resources: {reserve_cpu: 0.5}
            autoscale: {min: 2, max: 10, target_rps: 200, target_conns: 50, target_cpu: 70, up_window: 0s, down_window: 2m}
            """)[0]
        let autoscale = spec.autoscale
        #expect(autoscale.min == 2 && autoscale.max == 10)
        #expect(autoscale.targetRps == 200 && autoscale.targetConnections == 50 && autoscale.targetCpuPercent == 70)
        #expect(autoscale.hasScaleUpWindowMs && autoscale.scaleUpWindowMs == 0, "an explicit 0 is kept apart from the default")
        #expect(autoscale.scaleDownWindowMs == 120_000)
        #expect(spec.replicas == 2, "no replicas given: the first count is within the bounds")
        let defaults = try ServiceFile.parse("name: web\ndriver: process\ncommand: run\nreplicas: 4\nautoscale: {max: 3, target_rps: 9}\n")[0]
        #expect(defaults.autoscale.min == 1, "min defaults to 1")
        #expect(defaults.replicas == 4, "replicas given are kept (the autoscaler moves them within the bounds)")
        #expect(ServiceSpecRules.normalized(defaults).autoscale.scaleUpWindowMs == 10_000)
        #expect(ServiceSpecRules.normalized(defaults).autoscale.scaleDownWindowMs == 60_000)
        var unscaled = defaults
        unscaled.clearAutoscale()
        #expect(ServiceFile.differences(unscaled, defaults) == ["autoscale"])
        #expect(ServiceSpecRules.taskDigest(unscaled) == ServiceSpecRules.taskDigest(defaults), "autoscaling replaces no task")
    }

    @Test("applying a file again keeps the count the autoscaler chose, moved into the file's bounds")
    func applyKeepsAutoscaledReplicas() throws {
        let file = try ServiceFile.parse("name: web\ndriver: process\ncommand: run\nautoscale: {min: 2, max: 6, target_rps: 100}\n")[0]
        var current = file
        current.replicas = 5
        #expect(ServiceFile.keepingAutoscaledReplicas(file, current: current).replicas == 5)
        #expect(ServiceFile.differences(current, ServiceFile.keepingAutoscaledReplicas(file, current: current)).isEmpty)
        current.replicas = 9
        #expect(ServiceFile.keepingAutoscaledReplicas(file, current: current).replicas == 6)
        var fixed = file
        fixed.clearAutoscale()
        fixed.replicas = 3
        #expect(ServiceFile.keepingAutoscaledReplicas(fixed, current: current).replicas == 3, "without autoscale the file's count holds")
    }

    @Test("--autoscale: KEY=VALUE pairs, merged over the current policy on update; off removes it")
    func autoscaleFlag() throws {
        let fresh = try #require(try ServiceFile.autoscale("max=10,target-rps=200,target-cpu=70,up-window=15s,down-window=90s", over: nil))
        #expect(fresh.min == 1 && fresh.max == 10 && fresh.targetRps == 200 && fresh.targetCpuPercent == 70)
        #expect(fresh.scaleUpWindowMs == 15_000 && fresh.scaleDownWindowMs == 90_000)
        let merged = try #require(try ServiceFile.autoscale("max=20,target-cpu=0,target-conns=40", over: fresh))
        #expect(merged.min == 1 && merged.max == 20 && merged.targetRps == 200 && merged.targetCpuPercent == 0 && merged.targetConnections == 40)
        #expect(merged.scaleUpWindowMs == 15_000, "keys not given keep their value")
        #expect(try ServiceFile.autoscale("off", over: fresh) == nil)
        let typo = #expect(throws: ServiceFileError.self) { try ServiceFile.autoscale("max=3,target-rsp=1", over: nil) }
        #expect(typo?.path == "target-rsp")
        #expect(typo?.message.contains("target-rps") == true, "the keys are named as the flag writes them")
        let bare = #expect(throws: ServiceFileError.self) { try ServiceFile.autoscale("max", over: nil) }
        #expect(bare?.description.contains("KEY=VALUE") == true)
        let window = #expect(throws: ServiceFileError.self) { try ServiceFile.autoscale("max=3,up-window=soon", over: nil) }
        #expect(window?.path == "up-window")
    }
}
