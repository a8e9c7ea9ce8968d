import ClusterStore
import Testing

@Suite("Variables")
struct VariableTests {
    @Test("a put creates a variable whose create and modify indexes are the entry's index")
    func putCreates() throws {
        var log = Log()
        try log.skip()  // index 1: a new leader's empty entry
        let outcome = try log.run(ClusterCommands.varPut(key: "app/db/url", value: .init("postgres://db"), requestID: 7))
        #expect(outcome == ApplyOutcome(
            index: 2, requestID: 7, result: .ok(index: 2),
            changes: [StoreChange(table: .variables, key: "app/db/url", kind: .put, index: 2)]
        ))
        #expect(log.state.variable("app/db/url") == Variable(key: "app/db/url", value: .init("postgres://db"), createIndex: 2, modifyIndex: 2))
        #expect(log.state.appliedIndex == 2)
    }

    @Test("a second put keeps the create index and moves the modify index")
    func putReplaces() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("one")))
        try log.run(ClusterCommands.varPut(key: "other", value: .init("x")))
        let outcome = try log.run(ClusterCommands.varPut(key: "k", value: .init("two")))
        #expect(outcome.result == .ok(index: 3))
        #expect(log.state.variable("k") == Variable(key: "k", value: .init("two"), createIndex: 1, modifyIndex: 3))
    }

    @Test("an empty value is a value")
    func emptyValue() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "flag", value: []))
        #expect(log.state.variable("flag")?.value == [])
    }

    @Test("ls lists the variables under a prefix, sorted by key in byte order")
    func listByPrefix() throws {
        var log = Log()
        for key in ["app/b", "app/a", "db/x", "app/B", "app", "apple", "app/a/deep"] {
            try log.run(ClusterCommands.varPut(key: key, value: .init(key)))
        }
        #expect(log.state.variables(prefix: "app/").map(\.key) == ["app/B", "app/a", "app/a/deep", "app/b"])
        #expect(log.state.variables(prefix: "app").map(\.key) == ["app", "app/B", "app/a", "app/a/deep", "app/b", "apple"])
        #expect(log.state.variables().map(\.key) == ["app", "app/B", "app/a", "app/a/deep", "app/b", "apple", "db/x"])
        #expect(log.state.variables(prefix: "nothing").isEmpty)
    }

    @Test("rm deletes a variable and reports the delete's index")
    func deleteRemoves() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("v")))
        let outcome = try log.run(ClusterCommands.varDelete(key: "k", requestID: 9))
        #expect(outcome == ApplyOutcome(
            index: 2, requestID: 9, result: .ok(index: 2),
            changes: [StoreChange(table: .variables, key: "k", kind: .delete, index: 2)]
        ))
        #expect(log.state.variable("k") == nil)
        #expect(log.state.variables().isEmpty)
    }

    @Test("rm of a missing variable is not found, changes nothing, and still applies the entry")
    func deleteMissing() throws {
        var log = Log()
        let before = log.state
        let outcome = try log.run(ClusterCommands.varDelete(key: "ghost"))
        #expect(outcome.result == .notFound)
        #expect(outcome.changes.isEmpty)
        #expect(log.state.appliedIndex == 1)
        #expect(log.state.variables() == before.variables())
    }

    @Test("a re-created variable gets a new create index")
    func recreate() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("1")))
        try log.run(ClusterCommands.varDelete(key: "k"))
        try log.run(ClusterCommands.varPut(key: "k", value: .init("2")))
        #expect(log.state.variable("k") == Variable(key: "k", value: .init("2"), createIndex: 3, modifyIndex: 3))
    }

    // MARK: - Check-and-set

    @Test("cas 0 creates a variable that is absent")
    func casZeroCreates() throws {
        var log = Log()
        let outcome = try log.run(ClusterCommands.varPut(key: "lock", value: .init("me"), cas: 0))
        #expect(outcome.result == .ok(index: 1))
        #expect(log.state.variable("lock")?.value == .init("me"))
    }

    @Test("cas 0 refuses to overwrite a variable that exists, and reports its index")
    func casZeroRefusesExisting() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "lock", value: .init("first")))
        let outcome = try log.run(ClusterCommands.varPut(key: "lock", value: .init("second"), cas: 0))
        #expect(outcome.result == .casFailed(currentIndex: 1))
        #expect(outcome.changes.isEmpty)
        #expect(log.state.variable("lock")?.value == .init("first"))
        #expect(log.state.appliedIndex == 2)
    }

    @Test("cas with the current modify index succeeds")
    func casMatch() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("1")))
        try log.run(ClusterCommands.varPut(key: "k", value: .init("2")))
        let outcome = try log.run(ClusterCommands.varPut(key: "k", value: .init("3"), cas: 2))
        #expect(outcome.result == .ok(index: 3))
        #expect(log.state.variable("k") == Variable(key: "k", value: .init("3"), createIndex: 1, modifyIndex: 3))
    }

    @Test("cas with a stale index fails and reports the current index")
    func casMismatch() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("1")))
        try log.run(ClusterCommands.varPut(key: "k", value: .init("2")))
        let outcome = try log.run(ClusterCommands.varPut(key: "k", value: .init("3"), cas: 1))
        #expect(outcome.result == .casFailed(currentIndex: 2))
        #expect(log.state.variable("k")?.value == .init("2"))
    }

    @Test("cas with an index on an absent variable fails with current index 0")
    func casOnAbsent() throws {
        var log = Log()
        let outcome = try log.run(ClusterCommands.varPut(key: "k", value: .init("v"), cas: 5))
        #expect(outcome.result == .casFailed(currentIndex: 0))
        #expect(log.state.variable("k") == nil)
    }

    @Test("rm with cas deletes only at the current modify index")
    func deleteWithCAS() throws {
        var log = Log()
        try log.run(ClusterCommands.varPut(key: "k", value: .init("1")))
        try log.run(ClusterCommands.varPut(key: "k", value: .init("2")))
        #expect(try log.run(ClusterCommands.varDelete(key: "k", cas: 1)).result == .casFailed(currentIndex: 2))
        #expect(try log.run(ClusterCommands.varDelete(key: "k", cas: 0)).result == .casFailed(currentIndex: 2))
        #expect(log.state.variable("k") != nil)
        let outcome = try log.run(ClusterCommands.varDelete(key: "k", cas: 2))
        #expect(outcome.result == .ok(index: 5))
        #expect(log.state.variable("k") == nil)
    }

    @Test("rm with cas on an absent variable: 0 matches but finds nothing, any other index fails with 0")
    func deleteWithCASOnAbsent() throws {
        var log = Log()
        #expect(try log.run(ClusterCommands.varDelete(key: "k", cas: 0)).result == .notFound)
        #expect(try log.run(ClusterCommands.varDelete(key: "k", cas: 3)).result == .casFailed(currentIndex: 0))
    }

    // MARK: - Rules

    @Test("invalid keys and values are refused with a message naming the key and the rule", arguments: [
        ("", 0, "may not be empty"),
        ("/etc/passwd", 0, "may not start with '/'"),
        ("has space", 0, "only visible ASCII"),
        ("tab\there", 0, "only visible ASCII"),
        ("café", 0, "only visible ASCII"),
        (String(repeating: "k", count: 513), 0, "513 bytes long; the limit is 512"),
        ("big", 512 * 1024 + 1, "524289 bytes; the limit is 524288"),
    ])
    func invalidPut(key: String, valueBytes: Int, rule: String) throws {
        let value = [UInt8](repeating: 0, count: valueBytes)
        var log = Log()
        let outcome = try log.run(ClusterCommands.varPut(key: key, value: value))
        guard case .invalid(let message) = outcome.result else {
            Issue.record("expected invalid, got \(outcome.result)")
            return
        }
        #expect(message.contains(rule), "\(message)")
        if !key.isEmpty { #expect(message.contains(String(key.prefix(10).unicodeScalars.map { $0.escaped(asASCII: true) }.joined()))) }
        #expect(outcome.changes.isEmpty)
        #expect(log.state.variables().isEmpty)
        #expect(log.state.appliedIndex == 1)
        #expect(throws: StoreError.self) { try Variable.validate(key: key, value: value) }
    }

    @Test("the largest key and value are accepted")
    func limits() throws {
        var log = Log()
        let key = String(repeating: "k", count: 512)
        let value = [UInt8](repeating: 0xFF, count: 512 * 1024)
        try Variable.validate(key: key, value: value)
        #expect(try log.run(ClusterCommands.varPut(key: key, value: value)).result == .ok(index: 1))
        #expect(log.state.variable(key)?.value == value)
    }

    @Test("rm with an invalid key is refused as invalid")
    func invalidDelete() throws {
        var log = Log()
        guard case .invalid(let message) = try log.run(ClusterCommands.varDelete(key: "/k")).result else {
            Issue.record("expected invalid")
            return
        }
        #expect(message == "variable key \"/k\" may not start with '/'")
    }
}
