public import LoadBalancer

/// The node's load balancer statistics as Prometheus families, written at scrape time from
/// `NodeBalancer.stats()`: the forwarding path keeps its own counters and is not touched by metrics.
///
/// Labels: `service` (its name), `port` (the published port), `backend` (the task id). Counters restart from 0
/// when a port's proxy is replaced (a mode change), which Prometheus' rate() handles as a counter reset.
public enum LoadBalancerMetrics {
    /// The families written, with their help texts (docs/architecture.md lists them too).
    static let backendFamilies: [(name: String, kind: PrometheusText.Kind, help: String, value: @Sendable (BackendStats) -> UInt64)] = [
        ("flotilla_lb_active", .gauge, "Connections (tcp) or requests (http) in flight to the backend.", { UInt64(max(0, $0.active)) }),
        ("flotilla_lb_connections_total", .counter, "Connections opened to the backend.", { $0.connections }),
        ("flotilla_lb_requests_total", .counter, "Requests (http) or connections (tcp) forwarded to the backend.", { $0.requests }),
        ("flotilla_lb_errors_total", .counter,
         "Connect failures, resets, timeouts and balancer-made 5xx answers for the backend.", { $0.errors }),
        ("flotilla_lb_retries_total", .counter, "Attempts moved to another backend after this one failed.", { $0.retries }),
        ("flotilla_lb_ejections_total", .counter, "Times outlier detection ejected the backend.", { UInt64(max(0, $0.ejections)) }),
        ("flotilla_lb_ejected", .gauge, "1 while the backend is ejected by outlier detection.", { $0.ejected ? 1 : 0 }),
        ("flotilla_lb_received_bytes_total", .counter, "Bytes received from the backend.", { $0.bytesIn }),
        ("flotilla_lb_sent_bytes_total", .counter, "Bytes sent to the backend.", { $0.bytesOut }),
    ]

    static let latencyBoundsSeconds = LatencyHistogram.boundsMicros.map { Double($0) / 1_000_000 }

    /// Writes every service port's and backend's families into `text`.
    public static func write(_ services: [ServiceStats], into text: inout PrometheusText) {
        let backends = services.flatMap { service in
            service.backends.map { (labels: labels(service) + [("backend", $0.id)], stats: $0) }
        }
        for family in backendFamilies {
            text.family(family.name, family.kind, help: family.help)
            for backend in backends { text.sample(family.name, backend.labels, family.value(backend.stats)) }
        }
        text.family("flotilla_lb_latency_seconds", .histogram, help: "Time to connect (tcp) or to the response head (http).")
        for backend in backends {
            let latency = backend.stats.latency
            text.histogram(
                "flotilla_lb_latency_seconds", backend.labels, upperBounds: latencyBoundsSeconds, counts: latency.counts,
                sum: Double(latency.sumMicros) / 1_000_000)
        }
        text.family("flotilla_lb_rejected_total", .counter, help: "Clients the balancer answered itself because no backend could take them.")
        for service in services { text.sample("flotilla_lb_rejected_total", labels(service), service.rejected) }
        text.family("flotilla_lb_held", .gauge, help: "Connections (tcp) or requests (http) waiting for a first backend of a service scaled to zero.")
        for service in services { text.sample("flotilla_lb_held", labels(service), UInt64(max(0, service.held))) }
        text.family("flotilla_lb_hold_timeouts_total", .counter, help: "Held connections or requests that no backend took within the hold timeout.")
        for service in services { text.sample("flotilla_lb_hold_timeouts_total", labels(service), service.holdTimeouts) }
    }

    private static func labels(_ service: ServiceStats) -> [(String, String)] {
        [("service", service.serviceName.isEmpty ? service.service : service.serviceName), ("port", "\(service.publishedPort)")]
    }

    /// A collector reading the standalone proxy (`flotilla-agent proxy`) at each scrape.
    public static func collector(_ proxy: StandaloneProxy) -> MetricsExposition.Collector {
        { text in
            guard let stats = try? await proxy.stats() else { return }
            write([stats], into: &text)
        }
    }

    /// A collector reading `balancer` at each scrape.
    public static func collector(_ balancer: NodeBalancer) -> MetricsExposition.Collector {
        { text in
            let services = await balancer.stats()
            write(services, into: &text)
        }
    }
}
