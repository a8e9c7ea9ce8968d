public import Messages

// The wire form of the balancer's statistics (balancer.proto's BalancerReport), which agents send to the leader.

extension NodeBalancer {
    /// Everything this node's balancer counted, as the agent reports it (without `taken_ms`, which the sender
    /// sets).
    public func report() async -> Flotilla_V1_BalancerReport {
        var report = Flotilla_V1_BalancerReport()
        report.services = await stats().map(\.proto)
        report.latencyBoundsMicros = LatencyHistogram.boundsMicros
        return report
    }
}

extension ServiceStats {
    public var proto: Flotilla_V1_ServiceBalancerStats {
        var message = Flotilla_V1_ServiceBalancerStats()
        message.serviceID = serviceID
        message.serviceName = serviceName.isEmpty ? service : serviceName
        message.targetPort = UInt32(clamping: targetPort)
        message.publishedPort = UInt32(clamping: publishedPort)
        message.mode = mode
        message.policy = policy
        message.rejected = rejected
        message.backends = backends.sorted { $0.id < $1.id }.map(\.proto)
        return message
    }
}

extension BackendStats {
    public var proto: Flotilla_V1_BackendBalancerStats {
        var message = Flotilla_V1_BackendBalancerStats()
        message.taskID = id
        message.address = address
        message.weight = weight
        message.active = UInt32(clamping: active)
        message.connections = connections
        message.requests = requests
        message.errors = errors
        message.retries = retries
        message.ejections = UInt32(clamping: ejections)
        message.ejected = ejected
        message.bytesIn = bytesIn
        message.bytesOut = bytesOut
        message.latency = latency.proto
        return message
    }
}

extension LatencyHistogram {
    /// The counts without their trailing empty buckets (the bounds go once per report).
    public var proto: Flotilla_V1_LatencyHistogram {
        var message = Flotilla_V1_LatencyHistogram()
        let used = (counts.lastIndex { $0 > 0 }).map { $0 + 1 } ?? 0
        message.counts = Array(counts[..<used])
        message.sumMicros = sumMicros
        message.count = count
        return message
    }
}
