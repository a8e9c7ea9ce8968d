import ClusterStore
import CoreMetrics
import Foundation
import Logging
import Messages
import Orchestrator
import RaftRuntime
import Synchronization

/// The leader's autoscale loop: every `interval`, each replicated service with `autoscale` set is measured
/// (`AutoscaleMonitor`) and its `Autoscaler` asked for a change; a decision is committed through Raft as a
/// `ServiceScale` with its reason, at the version the decision was made on (a decision that went stale meanwhile
/// is refused by the store, and the next round decides again). Proposals go one at a time, so at most one is in
/// flight per service. The autoscalers are soft state: a new leader starts them afresh.
final class AutoscaleLoop: Sendable {
    let raft: ControllerRaft
    let monitor: AutoscaleMonitor
    let interval: Duration
    let logger: Logger
    private let metrics: any MetricsFactory
    /// One per autoscaled service, by service id; this reign only.
    private let autoscalers = Mutex<[String: Autoscaler]>([:])
    /// Names of the services whose gauges this controller shows (only while it leads, only autoscaled ones).
    private let gauged = Mutex<Set<String>>([])

    init(raft: ControllerRaft, monitor: AutoscaleMonitor, interval: Duration = .seconds(1), metrics: any MetricsFactory, logger: Logger) {
        self.raft = raft
        self.monitor = monitor
        self.interval = interval
        self.metrics = metrics
        self.logger = logger
    }

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            await round()
        }
    }

    /// What the targets of service `id` asked for at its last measured round; nil before one (or on a follower).
    func recommendation(for id: String) -> UInt32? { autoscalers.withLock { $0[id]?.recommendation } }

    /// One round, if this controller leads.
    func round() async {
        guard await raft.driver.status.role == .leader else {
            autoscalers.withLock { $0 = [:] }
            removeGauges(keeping: [])
            return
        }
        let state = raft.store.read { $0 }
        let services = state.services.filter { $0.spec.hasAutoscale && $0.spec.mode == .replicated }
        let kept = Set(services.map(\.id))
        autoscalers.withLock { $0 = $0.filter { kept.contains($0.key) } }
        removeGauges(keeping: Set(services.map(\.spec.name)))
        for service in services {
            let now = monitor.nowMillis
            let measurement = monitor.measure(service, tasks: state.tasks(ofService: service.id), at: now)
            let waking = monitor.waking(service.id, at: now)
            let decision = autoscalers.withLock { autoscalers in
                autoscalers[service.id, default: Autoscaler()].evaluate(
                    service.spec.autoscale, replicas: measurement.replicas, ready: measurement.ready,
                    observation: measurement.observation, wakingAt: waking, nowMs: now)
            }
            let recommended = recommendation(for: service.id)
            gauge("flotilla_autoscale_replicas", service.spec.name).record(Int(measurement.replicas))
            gauge("flotilla_autoscale_recommended_replicas", service.spec.name).record(Int(recommended ?? 0))
            gauged.withLock { _ = $0.insert(service.spec.name) }
            guard let decision else { continue }
            await commit(decision, for: service)
        }
    }

    private func commit(_ decision: AutoscaleDecision, for service: Flotilla_V1_ServiceRecord) async {
        let metadata: Logger.Metadata = [
            "service": "\(service.spec.name)", "replicas.from": "\(decision.from)", "replicas.to": "\(decision.to)",
            "reason": "\(decision.reason)"]
        do {
            let wall = UInt64(Date().timeIntervalSince1970 * 1000)
            let result = try await raft.propose(ClusterCommands.serviceScale(
                id: service.id, expectedVersion: service.version, replicas: decision.to, reason: decision.reason, nowMs: wall))
            switch result {
            case .ok: break
            case .invalid(let why):
                logger.warning("autoscale decision refused by the store", metadata: metadata.merging(["problem": "\(why)"]) { a, _ in a })
                return
            case .casFailed, .notFound:
                // The service changed (or went) since it was measured: the next round decides on what it is now.
                logger.debug("autoscale decision stale; deciding again next round", metadata: metadata)
                return
            }
            logger.info("service autoscaled", metadata: metadata)
            Counter(label: "flotilla_autoscale_decisions_total",
                    dimensions: [("service", service.spec.name), ("direction", decision.to > decision.from ? "up" : "down")],
                    factory: metrics).increment()
        } catch {
            logger.debug("autoscale decision not committed", metadata: metadata.merging(["error": "\(error)"]) { a, _ in a })
        }
    }

    private func gauge(_ label: String, _ service: String) -> Gauge {
        Gauge(label: label, dimensions: [("service", service)], factory: metrics)
    }

    /// Drops the gauges of services that no longer autoscale (or were removed, or all on losing leadership), so a
    /// scrape does not keep showing their last values.
    private func removeGauges(keeping names: Set<String>) {
        let gone = gauged.withLock { gauged in
            let gone = gauged.subtracting(names)
            gauged.subtract(gone)
            return gone
        }
        for name in gone {
            gauge("flotilla_autoscale_replicas", name).destroy()
            gauge("flotilla_autoscale_recommended_replicas", name).destroy()
        }
    }
}
