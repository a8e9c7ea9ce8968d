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
            """)[0]
        #expect(spec.lbPolicy == "ip-hash" && spec.lbMode == "http")
        let balancer = spec.loadBalancer
        #expect(balancer.hasRetries && balancer.retries == 0)
        #expect(balancer.connectTimeoutMs == 1_500 && balancer.idleTimeoutMs == 120_000 && balancer.requestTimeoutMs == 10_000)
        #expect(balancer.drainTimeoutMs == 30_000 && balancer.slowStartMs == 20_000)
        #expect(balancer.proxyProtocol && balancer.preferLocal && balancer.backendMaxConnections == 100)
        #expect(ServiceSpecRules.effectiveProtocol(of: spec.ports[0], in: spec) == "http")
        let unset = try ServiceFile.parse("name: web\ndriver: process\ncommand: run\nload_balancer: {drain_timeout: 5s}\n")[0]
        #expect(!unset.loadBalancer.hasRetries, "absent: the default applies")
        #expect(ServiceSpecRules.normalized(unset).loadBalancer.retries == 2)
    }
}
