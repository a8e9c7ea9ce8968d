import Balancing
import Testing

@Suite("Service tables: how a node's balancer takes the leader's updates")
struct ServiceTableTests {
    static func table(_ id: String, version: UInt64, backends: [String] = ["t1"], name: String? = nil, virtualIP: String = "") -> ServiceTable {
        ServiceTable(
            serviceID: id, name: name ?? id, version: version, virtualIP: virtualIP,
            ports: [.init(published: 8080, target: 80, mode: .tcp)],
            backends: backends.map { Backend(id: $0, host: "10.240.0.2", port: 80) })
    }

    @Test("a complete set replaces everything, whatever the versions, and says what it added, changed and removed")
    func complete() {
        var set = ServiceTableSet([Self.table("a", version: 10), Self.table("b", version: 10), Self.table("c", version: 10)])
        let change = set.apply(complete: true, tables: [Self.table("a", version: 10), Self.table("b", version: 3, backends: ["t2"]),
                                                       Self.table("d", version: 4)], removed: ["a"])
        #expect(change == TableSetChange(added: ["d"], changed: ["b"], removed: ["c"]))
        #expect(set.sorted.map(\.serviceID) == ["a", "b", "d"], "removed is not consulted with a complete set")
        #expect(set[serviceID: "b"]?.version == 3, "an older version in a complete set still replaces: a new leader's")
        #expect(set[serviceID: "b"]?.backends.map(\.id) == ["t2"])
    }

    @Test("a change is taken only when it is newer than the table held; removals remove")
    func incremental() {
        var set = ServiceTableSet([Self.table("a", version: 10), Self.table("b", version: 10)])
        var change = set.apply(complete: false, tables: [Self.table("a", version: 12, backends: ["t1", "t2"]), Self.table("c", version: 11)], removed: [])
        #expect(change == TableSetChange(added: ["c"], changed: ["a"]))
        #expect(set[serviceID: "a"]?.backends.count == 2)

        // A late or repeated update is ignored.
        change = set.apply(complete: false, tables: [Self.table("a", version: 11), Self.table("a", version: 12, backends: [])], removed: [])
        #expect(change.isEmpty)
        #expect(set[serviceID: "a"]?.version == 12 && set[serviceID: "a"]?.backends.count == 2)

        change = set.apply(complete: false, tables: [], removed: ["b", "unknown"])
        #expect(change == TableSetChange(removed: ["b"]))
        #expect(set.sorted.map(\.serviceID) == ["a", "c"])
    }

    @Test("a newer version with the same content is taken but is no change")
    func sameContent() {
        var set = ServiceTableSet([Self.table("a", version: 10)])
        var newer = Self.table("a", version: 10)
        newer.version = 20
        let change = set.apply(complete: false, tables: [newer], removed: [])
        #expect(change == TableSetChange(changed: ["a"]), "the version is part of the table")
        #expect(set.apply(complete: true, tables: [newer], removed: []).isEmpty)
    }

    @Test("an update makes a new set: a copy taken before it is untouched")
    func atomicValue() {
        var set = ServiceTableSet([Self.table("a", version: 1)])
        let before = set
        set.apply(complete: true, tables: [Self.table("b", version: 2)], removed: [])
        #expect(before.sorted.map(\.serviceID) == ["a"])
        #expect(set.sorted.map(\.serviceID) == ["b"])
    }

    @Test("tables are found by service id, name and virtual IP")
    func lookups() {
        let set = ServiceTableSet([Self.table("s-1", version: 1, name: "web", virtualIP: "10.96.0.1"), Self.table("s-2", version: 1, name: "api")])
        #expect(set.table(named: "web")?.serviceID == "s-1")
        #expect(set.table(virtualIP: "10.96.0.1")?.name == "web")
        #expect(set.table(virtualIP: "") == nil, "a service without a virtual IP is not found by the empty one")
        #expect(set.table(named: "db") == nil)
        #expect(set.count == 2)
    }

    @Test("a seeded sequence of updates leaves the set equal to the newest table of every service not removed since", arguments: [UInt64(1), 2, 3])
    func seededUpdates(seed: UInt64) {
        var random = seed &* 0x9E37_79B9_7F4A_7C15
        func next(_ bound: UInt64) -> UInt64 {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return (random >> 33) % bound
        }
        var set = ServiceTableSet()
        var newest: [String: UInt64] = [:]
        for step in 1...500 {
            let id = "s\(next(6))"
            if next(5) == 0 {
                set.apply(complete: false, tables: [], removed: [id])
                newest[id] = nil
            } else {
                // Versions arrive out of order now and then (a stale one is ignored).
                let version = UInt64(step) - next(3)
                set.apply(complete: false, tables: [Self.table(id, version: version)], removed: [])
                newest[id] = max(newest[id] ?? 0, version)
            }
            #expect(set.tables.mapValues(\.version) == newest, "seed \(seed), step \(step)")
        }
    }
}
