import AdminClient
import ClusterModel
import Foundation
import Messages
import Synchronization
import TestSupport
import Testing
import Transport
import Wire

/// `Admin/Events` on three in-process controllers: the history read with filters, a following stream that
/// receives what commits after it opened, leader elections, and the history after the leader goes away.
@Suite("Cluster events through the leader", .serialized)
struct EventStreamTests {
    /// Events a stream delivered, from the task reading it.
    final class Collected: Sendable {
        private let state = Mutex<[Flotilla_V1_ClusterEvent]>([])
        func add(_ batch: Flotilla_V1_EventsResponse) { state.withLock { $0 += batch.events } }
        var events: [Flotilla_V1_ClusterEvent] { state.withLock { $0 } }
    }

    static func read(_ admin: AdminClient, types: [String] = [], service: String = "", sinceID: UInt64 = 0) async throws -> [Flotilla_V1_ClusterEvent] {
        var request = Flotilla_V1_EventsRequest()
        request.types = types
        request.service = service
        request.sinceID = sinceID
        let collected = Collected()
        try await admin.events(request) { collected.add($0) }
        return collected.events
    }

    @Test("events: leader.elected, filters, a follow stream sees new events, and the history outlives its leader")
    func eventsAcrossALeaderChange() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("flotilla-events-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let (all, credentials) = try await ControllerClusterTests.startThree(root)
        let admin = try await AdminClient.connect(to: all.map(\.server.localAddress), credentials: credentials)
        var follower: Task<Void, any Error>?
        do {
            let first = try #require(await ControllerClusterTests.leader(all))
            let firstID = await first.server.raftStatus.id
            #expect(try await eventually(timeout: .seconds(10)) {
                (try? await Self.read(admin, types: ["leader"]))?.contains { $0.message.hasPrefix("\(firstID) elected in term") } == true
            })
            let history = try await Self.read(admin)
            #expect(history.map(\.id) == Array(1...UInt64(history.count)), "ids count up from 1 without gaps")
            #expect(history.contains { $0.type == "controller.joined" })

            // A following stream, opened before the service exists, receives its creation.
            let followed = Collected()
            var request = Flotilla_V1_EventsRequest()
            request.follow = true
            request.types = ["service", "leader.elected"]
            request.sinceID = history.last?.id ?? 0
            follower = Task { try await admin.events(request) { followed.add($0) } }
            _ = try await admin.serviceCreate(Flotilla_V1_ServiceSpec.process("web", command: "sleep 60", replicas: 2, monitorMs: 0))
            #expect(try await eventually(timeout: .seconds(10)) { followed.events.contains { $0.type == "service.created" && $0.serviceName == "web" } })

            // Filters: by type (a prefix) and by service.
            let services = try await Self.read(admin, types: ["service"])
            #expect(services.map(\.type) == ["service.created"])
            #expect(try await Self.read(admin, service: "web").allSatisfy { $0.serviceName == "web" })
            #expect(try await Self.read(admin, service: "nothing").isEmpty)
            let before = try await Self.read(admin)

            // The leader goes away: the new one answers with the same history, and a new election after it.
            await ControllerClusterTests.stop(first)
            var remaining: [ControllerClusterTests.Running] = []
            for running in all where await running.server.raftStatus.id != firstID { remaining.append(running) }
            let survivors = remaining
            #expect(try await eventually(timeout: .seconds(30)) { await ControllerClusterTests.leader(survivors) != nil })
            let second = try #require(await ControllerClusterTests.leader(survivors))
            let secondID = await second.server.raftStatus.id
            #expect(try await eventually(timeout: .seconds(20)) {
                (try? await Self.read(admin, types: ["leader.elected"]))?.contains { $0.message.hasPrefix("\(secondID) elected") } == true
            })
            let after = try await Self.read(admin)
            #expect(Array(after.prefix(before.count)) == before, "the history from before the leader change is kept as it was")
            // The following stream moved to the new leader and resumed after the last event it had.
            #expect(try await eventually(timeout: .seconds(30)) { followed.events.contains { $0.message.hasPrefix("\(secondID) elected") } })
            let ids = followed.events.map(\.id)
            #expect(ids == ids.sorted() && Set(ids).count == ids.count, "nothing repeated: \(ids)")
        } catch {
            follower?.cancel()
            await admin.close()
            for running in all { await ControllerClusterTests.stop(running) }
            throw error
        }
        follower?.cancel()
        _ = try? await follower?.value
        await admin.close()
        for running in all { await ControllerClusterTests.stop(running) }
    }
}
