public import Prometheus

/// The metrics factory both executables bootstrap swift-metrics with (and hand to their components):
/// swift-prometheus over one registry, with latency buckets that resolve what the defaults (5 ms and up)
/// would lump together — an fsync on a fast disk takes well under a millisecond.
public enum FlotillaMetrics {
    /// Upper bounds for disk latencies: 50 µs to 1 s, roughly ×2 apart.
    public static let diskLatencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .microseconds(2_500), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
    ]

    /// Timer labels that get `diskLatencyBuckets`.
    public static let diskLatencyTimers = ["flotilla_raft_wal_append_seconds", "flotilla_raft_wal_fsync_seconds"]

    public static func factory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        for label in diskLatencyTimers { factory.durationHistogramBuckets[label] = diskLatencyBuckets }
        return factory
    }
}
