/// What one balancer saw of one backend (summed over event loops when reported).
public struct BackendStats: Sendable, Equatable {
    public var id: String
    public var address: String
    public var weight: UInt32
    /// Connections (TCP) or requests (HTTP) in flight now.
    public var active: Int = 0
    /// Connections opened to the backend (HTTP: upstream connections, each serving many requests).
    public var connections: UInt64 = 0
    public var requests: UInt64 = 0
    /// Connects refused or timed out, upstream resets, response timeouts, 5xx answers made by the balancer.
    public var errors: UInt64 = 0
    /// Attempts moved to another backend after this one failed.
    public var retries: UInt64 = 0
    public var ejections: Int = 0
    public var ejected: Bool = false
    public var inTable: Bool = true
    /// Bytes received from the backend, and sent to it.
    public var bytesIn: UInt64 = 0
    public var bytesOut: UInt64 = 0
    /// Time to connect (TCP) or to the response head (HTTP).
    public var latency = LatencyHistogram()

    public init(id: String, address: String, weight: UInt32) {
        self.id = id
        self.address = address
        self.weight = weight
    }

    mutating func add(_ other: BackendStats) {
        active += other.active
        connections += other.connections
        requests += other.requests
        errors += other.errors
        retries += other.retries
        ejections = max(ejections, other.ejections)
        ejected = ejected || other.ejected
        bytesIn += other.bytesIn
        bytesOut += other.bytesOut
        latency.add(other.latency)
    }
}

/// One service's balancer statistics.
public struct ServiceStats: Sendable, Equatable {
    public var service: String
    public var mode: String
    public var policy: String
    public var backends: [BackendStats]
    /// Clients answered by the balancer itself because no backend could take them (503, 502, 504, or a TCP close).
    public var rejected: UInt64
    /// Connections (HTTP: requests) waiting now for a backend of a service scaled to zero, and those that
    /// waited until the hold timeout (they count in `rejected` too). On the node's metrics, not in its report.
    public var held = 0
    public var holdTimeouts: UInt64 = 0
    /// Which service and port these are for, filled in by `NodeBalancer` (empty and 0 for a standalone proxy,
    /// whose `service` names it).
    public var serviceID = ""
    public var serviceName = ""
    public var targetPort = 0
    public var publishedPort = 0

    public init(service: String, mode: String, policy: String, backends: [BackendStats], rejected: UInt64) {
        self.service = service
        self.mode = mode
        self.policy = policy
        self.backends = backends
        self.rejected = rejected
    }
}

/// Latencies in fixed buckets (upper bounds in microseconds, roughly ×2 apart), as Prometheus histograms keep them.
public struct LatencyHistogram: Sendable, Equatable {
    public static let boundsMicros: [UInt64] = [
        100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
        2_500_000, 5_000_000, 10_000_000,
    ]
    /// counts[i] = observations ≤ boundsMicros[i] and > the previous bound; the last is everything above.
    public private(set) var counts = [UInt64](repeating: 0, count: LatencyHistogram.boundsMicros.count + 1)
    public private(set) var sumMicros: UInt64 = 0
    public private(set) var count: UInt64 = 0

    public init() {}

    public mutating func record(micros: UInt64) {
        var index = 0
        while index < Self.boundsMicros.count, micros > Self.boundsMicros[index] { index += 1 }
        counts[index] += 1
        sumMicros &+= micros
        count += 1
    }

    mutating func add(_ other: LatencyHistogram) {
        for index in counts.indices { counts[index] += other.counts[index] }
        sumMicros &+= other.sumMicros
        count += other.count
    }

    /// The bucket bound under which `fraction` of the observations fall (nil with none), e.g. 0.99 for p99.
    public func quantileMicros(_ fraction: Double) -> UInt64? {
        guard count > 0 else { return nil }
        let wanted = UInt64((Double(count) * fraction).rounded(.up))
        var seen: UInt64 = 0
        for (index, bucket) in counts.enumerated() {
            seen += bucket
            if seen >= wanted { return index < Self.boundsMicros.count ? Self.boundsMicros[index] : UInt64.max }
        }
        return UInt64.max
    }
}
