import ClusterModel
import ClusterStore
import Testing

@Suite("The controllers' address book")
struct ControllerTableTests {
    @Test("upsert adds and replaces a controller; remove takes it out")
    func upsertAndRemove() throws {
        var log = Log()
        let c1 = ControllerRecord(id: NodeID("c1"), address: "10.0.0.1:7400", isVoter: false)
        let c0 = ControllerRecord(id: NodeID("c0"), address: "[fd00::1]:7400", isVoter: true)
        #expect(try log.run(ClusterCommands.controllerUpsert(c1, requestID: 1)) == ApplyOutcome(
            index: 1, requestID: 1, result: .ok(index: 1),
            changes: [StoreChange(table: .controllers, key: "c1", kind: .put, index: 1), StoreChange(table: .events, key: "1", kind: .put, index: 1)]
        ))
        try log.run(ClusterCommands.controllerUpsert(c0))
        #expect(log.state.controllers == [c0, c1])

        var promoted = c1
        promoted.isVoter = true
        try log.run(ClusterCommands.controllerUpsert(promoted))
        #expect(log.state.controller(NodeID("c1")) == promoted)

        #expect(try log.run(ClusterCommands.controllerRemove(id: NodeID("c0"))).changes
            == [StoreChange(table: .controllers, key: "c0", kind: .delete, index: 4), StoreChange(table: .events, key: "3", kind: .put, index: 4)])
        #expect(log.state.controllers == [promoted])
        #expect(try log.run(ClusterCommands.controllerRemove(id: NodeID("c0"))).result == .notFound)
    }

    @Test("a controller whose address is not host:port is refused", arguments: ["10.0.0.1", "10.0.0.1:0", "host:99999", "::1:7400", "a b:1", ""])
    func badAddress(address: String) throws {
        var log = Log()
        let record = ControllerRecord(id: NodeID("c1"), address: address, isVoter: true)
        #expect(throws: StoreError.self) { try record.validate() }
        guard case .invalid(let message) = try log.run(ClusterCommands.controllerUpsert(record)).result else {
            Issue.record("expected invalid")
            return
        }
        #expect(message.contains("controller c1's address"))
        #expect(log.state.controllers.isEmpty)
    }

    @Test("a controller with an empty id is refused")
    func emptyID() throws {
        var log = Log()
        let record = ControllerRecord(id: NodeID(""), address: "h:1", isVoter: true)
        #expect(try log.run(ClusterCommands.controllerUpsert(record)).result == .invalid("a controller id may not be empty"))
        #expect(try log.run(ClusterCommands.controllerRemove(id: NodeID(""))).result == .invalid("a controller id may not be empty"))
    }
}
