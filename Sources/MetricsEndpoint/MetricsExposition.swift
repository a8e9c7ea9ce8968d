public import Prometheus

/// What a /metrics scrape answers: the process's registry (everything recorded through swift-metrics) and
/// the collectors that read soft state at scrape time.
///
/// Collectors run first, so one that only sets registry gauges (the controller's sessions and tasks) is
/// seen by the same scrape; what they write themselves follows the registry's families. A collector's
/// family names must not repeat the registry's (one family, one TYPE line).
public struct MetricsExposition: Sendable {
    public typealias Collector = @Sendable (inout PrometheusText) async -> Void

    public let registry: PrometheusCollectorRegistry
    public var collectors: [Collector]

    public init(registry: PrometheusCollectorRegistry, collectors: [Collector] = []) {
        self.registry = registry
        self.collectors = collectors
    }

    /// The whole exposition, in Prometheus text format.
    public func render() async -> [UInt8] {
        var collected = PrometheusText()
        for collector in collectors { await collector(&collected) }
        return registry.emitToBuffer() + collected.bytes
    }
}
