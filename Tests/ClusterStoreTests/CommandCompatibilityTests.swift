import ClusterModel
import ClusterStore
import Messages
import SwiftProtobuf
import Testing

@Suite("Commands from other versions, and entries that are not commands")
struct CommandCompatibilityTests {
    /// A state with something in it, so "nothing changed" means something.
    private func populated() throws -> Log {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("v")))
        try log.run(ClusterCommands.controllerUpsert(ControllerRecord(id: NodeID("c1"), address: "10.0.0.1:7400", isVoter: true)))
        return log
    }

    /// Expects `command` to be refused with `code`, leaving the state exactly as it was; returns the message.
    @discardableResult
    private func expectRefused(_ command: [UInt8], _ code: StoreError.Code, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        var log = try populated()
        let before = log.state
        do {
            let outcome = try log.run(command)
            Issue.record("expected \(code), applied as \(outcome)", sourceLocation: sourceLocation)
            return ""
        } catch {
            #expect(error.code == code, sourceLocation: sourceLocation)
            #expect(log.state == before, "the state changed", sourceLocation: sourceLocation)
            #expect(log.state.appliedIndex == 2, sourceLocation: sourceLocation)
            // The runtime stops here; once upgraded, the same entry applies at the same index.
            #expect(throws: StoreError.self, sourceLocation: sourceLocation) { try log.state.apply(index: 4, command: ClusterCommands.varDelete(key: "k")) }
            return error.message
        }
    }

    @Test("a command from a newer Flotilla is refused without changing state or the applied index")
    func newerCommandRefused() throws {
        // A newer version's oneof case, say `NodeRegister node_register = 1000` holding `id = "n1"`, arrives as
        // an unknown field next to the request id.
        let newer = RawProtobuf.varintField(field: 1, 3) + RawProtobuf.lengthDelimited(field: 1000, RawProtobuf.lengthDelimited(field: 1, .init("n1")))
        let message = try expectRefused(newer, .newerCommand)
        #expect(message == "this controller (store version \(StoreVersion.commandSet)) cannot apply a command from a newer Flotilla: log entry 3 carries field 1000 of ClusterCommand, which this version does not know; upgrade it")
    }

    @Test("a known command with an unknown field appended is refused as newer")
    func unknownFieldOnEnvelope() throws {
        let command = ClusterCommands.varPut(key: "k", value: .init("new")) + RawProtobuf.varintField(field: 99, 1)
        let message = try expectRefused(command, .newerCommand)
        #expect(message.contains("field 99 of ClusterCommand"))
    }

    @Test("a known command carrying a field it does not know, inside, is refused as newer")
    func unknownFieldInsideCommand() throws {
        var put = Flotilla_V1_VarPut()
        put.key = "k"
        put.value = .init([1, 2, 3])
        let putBytes: [UInt8] = try put.serializedBytes() + RawProtobuf.varintField(field: 4, 60)  // say, a TTL
        let message = try expectRefused(RawProtobuf.lengthDelimited(field: 10, putBytes), .newerCommand)
        #expect(message.contains("field 4 of VarPut"))

        var record = Flotilla_V1_ControllerRecord()
        record.id = "c2"
        record.address = "10.0.0.2:7400"
        let recordBytes: [UInt8] = try record.serializedBytes() + RawProtobuf.lengthDelimited(field: 7, .init("zone-a"))
        let upsert = RawProtobuf.lengthDelimited(field: 20, RawProtobuf.lengthDelimited(field: 1, recordBytes))
        #expect(try expectRefused(upsert, .newerCommand).contains("field 7 of ControllerRecord"))
    }

    @Test("a service spec whose load-balancer settings carry a field this version does not know is refused as newer")
    func unknownLoadBalancerField() throws {
        var record = ServiceTableTests.service()
        record.spec.loadBalancer.retries = 1
        let balancer: [UInt8] = try record.spec.loadBalancer.serializedBytes() + RawProtobuf.varintField(field: 50, 1)  // say, a new knob
        record.spec.clearLoadBalancer()
        let spec: [UInt8] = try record.spec.serializedBytes() + RawProtobuf.lengthDelimited(field: 24, balancer)
        record.clearSpec()
        let recordBytes: [UInt8] = try record.serializedBytes() + RawProtobuf.lengthDelimited(field: 2, spec)
        let create = RawProtobuf.lengthDelimited(field: 40, RawProtobuf.lengthDelimited(field: 1, recordBytes))
        #expect(try expectRefused(create, .newerCommand).contains("field 50 of LoadBalancerSpec"))
    }

    @Test("bytes that are not a ClusterCommand are refused as undecodable", arguments: [
        [0xFF, 0xFF, 0xFF] as [UInt8],           // a tag that never ends
        [0x0A],                                   // field 1, length-delimited, with no length
        [0x52, 0x05, 0x0A, 0x01],                 // VarPut claiming 5 bytes, holding 2
        [0x07],                                   // wire type 7 does not exist
        [0x52, 0x03, 0x0A, 0x01, 0xFF],           // a key that is not UTF-8
    ])
    func malformedRefused(bytes: [UInt8]) throws {
        let message = try expectRefused(bytes, .undecodableCommand)
        #expect(message.hasPrefix("log entry 3 is not a ClusterCommand"))
    }

    @Test("a ClusterCommand with no command and nothing unknown is refused as empty", arguments: [
        [] as [UInt8],
        RawProtobuf.varintField(field: 1, 42),
    ])
    func emptyRefused(bytes: [UInt8]) throws {
        let message = try expectRefused(bytes, .emptyCommand)
        #expect(message.hasPrefix("log entry 3 is a ClusterCommand with no command in it"))
    }

    @Test("entries must be applied one by one in log order")
    func outOfOrder() throws {
        var state = ClusterState()
        #expect(throws: StoreError(code: .outOfOrder, message: "log entry 2 offered to a store that has applied up to 0; entries apply one by one in log order, so the next must be 1")) {
            try state.apply(index: 2, command: ClusterCommands.varPut(key: "k", value: []))
        }
        #expect(throws: StoreError.self) { try state.skip(index: 0) }
        try state.skip(index: 1)
        #expect(throws: StoreError.self) { try state.skip(index: 1) }
        #expect(throws: StoreError.self) { try state.apply(index: 1, command: ClusterCommands.varPut(key: "k", value: [])) }
        #expect(state.appliedIndex == 1)
        #expect(state.variables().isEmpty)
    }

    @Test("skip moves the applied index and nothing else")
    func skipOnlyMovesIndex() throws {
        var log = try populated()
        let variables = log.state.variables()
        let controllers = log.state.controllers
        try log.skip()
        try log.skip()
        #expect(log.state.appliedIndex == 4)
        #expect(log.state.variables() == variables)
        #expect(log.state.controllers == controllers)
    }

    @Test("the command encoders write what the generated decoder reads")
    func encodersRoundTrip() throws {
        let put = try Flotilla_V1_ClusterCommand(serializedBytes: ClusterCommands.varPut(key: "a", value: [9], cas: 0, requestID: 5))
        #expect(put.requestID == 5)
        #expect(put.varPut.key == "a")
        #expect(put.varPut.hasCasIndex && put.varPut.casIndex == 0)
        let unconditional = try Flotilla_V1_ClusterCommand(serializedBytes: ClusterCommands.varDelete(key: "a"))
        #expect(unconditional.varDelete.key == "a")
        #expect(!unconditional.varDelete.hasCasIndex)
    }
}
