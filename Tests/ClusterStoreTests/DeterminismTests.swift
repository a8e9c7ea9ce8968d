import ClusterModel
import ClusterStore
import Testing

@Suite("Determinism")
struct DeterminismTests {
    @Test("two stores applying the same 10,000 seeded commands are equal and snapshot to identical bytes", arguments: [1, 2, 0xF107_111A] as [UInt64])
    func sameLogSameState(seed: UInt64) throws {
        let entries = Workload.make(seed: seed, count: 10_000)
        var first = Log()
        var second = Log()
        for entry in entries {
            let a = try first.apply(entry)
            let b = try second.apply(entry)
            #expect(a == b)
        }
        #expect(first.state == second.state)
        #expect(first.state.appliedIndex == 10_000)
        #expect(first.state.snapshot() == second.state.snapshot())
        #expect(!first.state.variables().isEmpty, "the workload should leave something behind")
    }

    @Test("a snapshot at a random point, restored and followed by the rest of the log, equals applying everything", arguments: [3, 4, 5, 6, 7] as [UInt64])
    func snapshotThenRest(seed: UInt64) throws {
        let entries = Workload.make(seed: seed, count: 3_000)
        var whole = Log()
        var outcomes: [ApplyOutcome?] = []
        for entry in entries { outcomes.append(try whole.apply(entry)) }

        var rng = SplitMix64(seed: seed)
        let cut = rng.below(entries.count + 1)
        var before = Log()
        for entry in entries[..<cut] { _ = try before.apply(entry) }
        var after = Log(state: try ClusterState(snapshot: before.state.snapshot()))
        #expect(after.state == before.state)
        for (offset, entry) in entries[cut...].enumerated() {
            #expect(try after.apply(entry) == outcomes[cut + offset])
        }
        #expect(after.state == whole.state)
        #expect(after.state.snapshot() == whole.state.snapshot())
    }

    @Test("every outcome's changes are exactly the rows that changed", arguments: [8, 9] as [UInt64])
    func changesMatchDiff(seed: UInt64) throws {
        var log = Log()
        for entry in Workload.make(seed: seed, count: 5_000) {
            let before = log.state
            guard let outcome = try log.apply(entry) else {
                #expect(log.state.variables() == before.variables() && log.state.controllers == before.controllers)
                #expect(log.state.events == before.events)
                continue
            }
            #expect(outcome.changes == diff(before, log.state, at: outcome.index))
            if case .ok = outcome.result {} else { #expect(outcome.changes.isEmpty) }
        }
    }

    @Test("variables follow a reference model of put, delete and check-and-set", arguments: [10, 11] as [UInt64])
    func referenceModel(seed: UInt64) throws {
        var model: [String: Variable] = [:]
        var rng = SplitMix64(seed: seed)
        var log = Log()
        for _ in 0..<5_000 {
            let index = log.nextIndex
            let key = Workload.keys.randomElement(using: &rng)!
            let current = model[key]?.modifyIndex ?? 0
            let cas: UInt64? = [nil, current, 0, current + 1].randomElement(using: &rng)!
            let expected: ApplyResult
            if Bool.random(using: &rng) {
                let value = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: rng.below(4))
                if let cas, cas != current {
                    expected = .casFailed(currentIndex: current)
                } else {
                    model[key] = Variable(key: key, value: value, createIndex: model[key]?.createIndex ?? index, modifyIndex: index)
                    expected = .ok(index: index)
                }
                #expect(try log.run(ClusterCommands.varPut(key: key, value: value, cas: cas)).result == expected)
            } else {
                if let cas, cas != current {
                    expected = .casFailed(currentIndex: current)
                } else if model[key] == nil {
                    expected = .notFound
                } else {
                    model[key] = nil
                    expected = .ok(index: index)
                }
                #expect(try log.run(ClusterCommands.varDelete(key: key, cas: cas)).result == expected)
            }
        }
        #expect(log.state.variables() == model.values.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) })
    }

    /// The rows that differ between two states, as the changes an apply at `index` should report, in a canonical
    /// order (a command changes at most one row today, so order is moot).
    private func diff(_ old: ClusterState, _ new: ClusterState, at index: UInt64) -> [StoreChange] {
        var changes: [StoreChange] = []
        for key in Set(old.variables().map(\.key) + new.variables().map(\.key)).sorted() {
            switch (old.variable(key), new.variable(key)) {
            case (let a, let b?) where a != b: changes.append(StoreChange(table: .variables, key: key, kind: .put, index: index))
            case (_?, nil): changes.append(StoreChange(table: .variables, key: key, kind: .delete, index: index))
            default: break
            }
        }
        for id in Set(old.controllers.map(\.id) + new.controllers.map(\.id)).sorted() {
            switch (old.controller(id), new.controller(id)) {
            case (let a, let b?) where a != b: changes.append(StoreChange(table: .controllers, key: id.rawValue, kind: .put, index: index))
            case (_?, nil): changes.append(StoreChange(table: .controllers, key: id.rawValue, kind: .delete, index: index))
            default: break
            }
        }
        // Commands touch tables in the order tokens, nodes, revoked nodes (a join: token then node; a removal:
        // node then revocation), so the diff lists them in that order too.
        for id in Set(old.tokens.map(\.id) + new.tokens.map(\.id)).sorted() where old.token(id) != new.token(id) {
            changes.append(StoreChange(table: .tokens, key: id, kind: new.token(id) == nil ? .delete : .put, index: index))
        }
        for id in Set(old.nodes.map(\.id) + new.nodes.map(\.id)).sorted() where old.node(id) != new.node(id) {
            changes.append(StoreChange(table: .nodes, key: id.rawValue, kind: new.node(id) == nil ? .delete : .put, index: index))
        }
        for id in Set(old.revokedNodes.map(\.id) + new.revokedNodes.map(\.id)).sorted() where old.isRevoked(id) != new.isRevoked(id) {
            changes.append(StoreChange(table: .revokedNodes, key: id.rawValue, kind: new.isRevoked(id) ? .put : .delete, index: index))
        }
        if old.ca != new.ca { changes.append(StoreChange(table: .ca, key: "ca", kind: new.ca == nil ? .delete : .put, index: index)) }
        for id in Set(old.services.map(\.id) + new.services.map(\.id)).sorted() where old.service(id) != new.service(id) {
            changes.append(StoreChange(table: .services, key: id, kind: new.service(id) == nil ? .delete : .put, index: index))
        }
        for id in Set(old.tasks.map(\.id) + new.tasks.map(\.id)).sorted() where old.task(id) != new.task(id) {
            changes.append(StoreChange(table: .tasks, key: id, kind: new.task(id) == nil ? .delete : .put, index: index))
        }
        // Events come last, by id: the dropped (oldest) ones, then the new ones.
        let oldEvents = Set(old.events.map(\.id)), newEvents = Set(new.events.map(\.id))
        for id in oldEvents.union(newEvents).sorted() where oldEvents.contains(id) != newEvents.contains(id) {
            changes.append(StoreChange(table: .events, key: String(id), kind: newEvents.contains(id) ? .put : .delete, index: index))
        }
        return changes
    }
}
