import ClusterModel
import ClusterStore
import Messages
import SwiftProtobuf
import Testing

@Suite("Virtual IPs: every service gets one from the service network")
struct VirtualIPTests {
    static func service(_ name: String) -> Flotilla_V1_ServiceRecord {
        var record = ServiceTableTests.service("svc-\(name)")
        record.spec.name = name
        return record
    }

    static func virtualIPs(_ state: ClusterState) -> [String: String] {
        Dictionary(uniqueKeysWithValues: state.services.map { ($0.spec.name, $0.virtualIp) })
    }

    @Test("the service network lies apart from the container network")
    func networksApart() throws {
        let services = try IPv4Subnet(parsing: ClusterState.serviceNetwork)
        let containers = try IPv4Subnet(parsing: ClusterState.containerNetwork)
        #expect(!services.overlaps(containers))
    }

    @Test("services get the lowest free address in creation order, the same on every controller, whatever the command carries")
    func deterministic() throws {
        var first = Log()
        var second = Log()
        for name in ["web", "api", "db"] {
            var record = Self.service(name)
            record.virtualIp = "10.96.200.200"  // not the proposer's to choose
            let command = ClusterCommands.serviceCreate(record)
            try first.run(command)
            try second.run(command)
        }
        #expect(Self.virtualIPs(first.state) == ["web": "10.96.0.1", "api": "10.96.0.2", "db": "10.96.0.3"])
        #expect(first.state == second.state)
        #expect(first.state.service(virtualIP: "10.96.0.2")?.spec.name == "api")
    }

    @Test("an update keeps the address; a removed service's address is the next one given")
    func reuseAfterRemoval() throws {
        var log = Log()
        for name in ["web", "api", "db"] { try log.run(ClusterCommands.serviceCreate(Self.service(name))) }
        var spec = try #require(log.state.service(named: "api")).spec
        spec.replicas = 7
        try log.run(ClusterCommands.serviceUpdate(id: "svc-api", spec: spec, expectedVersion: 1, nowMs: 5))
        #expect(log.state.service(named: "api")?.virtualIp == "10.96.0.2")
        try log.run(ClusterCommands.serviceRemove(id: "svc-api"))
        #expect(log.state.service(virtualIP: "10.96.0.2") == nil)
        try log.run(ClusterCommands.serviceCreate(Self.service("cache")))
        try log.run(ClusterCommands.serviceCreate(Self.service("queue")))
        #expect(Self.virtualIPs(log.state) == ["web": "10.96.0.1", "cache": "10.96.0.2", "db": "10.96.0.3", "queue": "10.96.0.4"])
    }

    @Test("addresses survive a snapshot, and allocation after a restore continues from the same taken set")
    func snapshotRoundTrip() throws {
        var log = Log()
        for name in ["web", "api", "db"] { try log.run(ClusterCommands.serviceCreate(Self.service(name))) }
        try log.run(ClusterCommands.serviceRemove(id: "svc-web"))
        var restored = Log(state: try ClusterState(snapshot: log.state.snapshot()))
        #expect(restored.state == log.state)
        #expect(Self.virtualIPs(restored.state) == ["api": "10.96.0.2", "db": "10.96.0.3"])
        try restored.run(ClusterCommands.serviceCreate(Self.service("web")))
        try log.run(ClusterCommands.serviceCreate(Self.service("web")))
        #expect(restored.state.service(named: "web")?.virtualIp == "10.96.0.1")
        #expect(restored.state == log.state)
    }

    @Test("a snapshot giving two services one address, or one outside the network, is refused as damaged")
    func damagedSnapshots() throws {
        var log = Log()
        for name in ["web", "api"] { try log.run(ClusterCommands.serviceCreate(Self.service(name))) }
        for bad in ["10.96.0.1", "10.97.0.1", "10.96.255.255", "not an address"] {
            var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: log.state.snapshot())
            snapshot.services[0].virtualIp = bad  // svc-api; svc-web holds 10.96.0.1
            let error = #expect(throws: StoreError.self, "\(bad)") { try ClusterState(snapshot: try snapshot.serializedBytes()) }
            #expect(error?.code == .invalidSnapshot)
            #expect(error?.message.contains("virtual IP") == true, "\(error?.message ?? "")")
        }
    }

    @Test("a service from before virtual IPs gets one at its next update")
    func olderServiceGetsOne() throws {
        var log = Log()
        for name in ["web", "api"] { try log.run(ClusterCommands.serviceCreate(Self.service(name))) }
        var snapshot = try Flotilla_V1_ClusterSnapshot(serializedBytes: log.state.snapshot())
        snapshot.services[0].virtualIp = ""  // svc-api, sorted by id
        var older = Log(state: try ClusterState(snapshot: try snapshot.serializedBytes()))
        #expect(older.state.service(named: "api")?.virtualIp == "")
        let spec = try #require(older.state.service(named: "api")).spec
        try older.run(ClusterCommands.serviceUpdate(id: "svc-api", spec: spec, expectedVersion: 1, nowMs: 5))
        #expect(older.state.service(named: "api")?.virtualIp == "10.96.0.2")
    }

    @Test("when every address is taken, creating a service is refused, saying why")
    func exhaustion() throws {
        // A state holding every one of the network's 65534 addresses, built as a snapshot (65534 creates
        // would take minutes).
        let network = try IPv4Subnet(parsing: ClusterState.serviceNetwork)
        var snapshot = Flotilla_V1_ClusterSnapshot()
        snapshot.formatVersion = StoreVersion.snapshotFormat
        snapshot.appliedIndex = 1
        snapshot.services = (1..<network.size - 1).map { offset in
            var record = Flotilla_V1_ServiceRecord()
            record.id = "svc-\(offset)"
            record.spec.name = "s\(offset)"
            record.version = 1
            record.virtualIp = network.address(at: offset)!.description
            return record
        }
        var log = Log(state: try ClusterState(snapshot: try snapshot.serializedBytes()))
        let outcome = try log.run(ClusterCommands.serviceCreate(Self.service("one-too-many")))
        #expect(outcome.result == .invalid("service one-too-many cannot be created: all 65534 virtual IPs of the service network 10.96.0.0/16 are taken: remove services that are no longer needed"))
        #expect(log.state.service(named: "one-too-many") == nil)
        try log.run(ClusterCommands.serviceRemove(id: "svc-77"))
        try log.run(ClusterCommands.serviceCreate(Self.service("one-too-many")))
        #expect(log.state.service(named: "one-too-many")?.virtualIp == "10.96.0.77")
    }
}
