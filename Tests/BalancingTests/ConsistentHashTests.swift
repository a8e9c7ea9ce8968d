import Balancing
import Testing

@Suite("ip-hash: a Maglev table keeps each client on its backend through churn")
struct ConsistentHashTests {
    /// Backend number per client, for `clients` clients.
    private func assignment(_ balancer: Balancer, clients: Int, nowMillis: UInt64 = 0) -> [Int] {
        (0..<clients).map { balancer.pickPosition(client: $0, nowMillis: nowMillis) }
    }

    /// Backend id per client.
    private func assignedIDs(_ balancer: Balancer, clients: Int) -> [String] {
        assignment(balancer, clients: clients).map { balancer.states[$0].backend.id }
    }

    private func movedFraction(_ before: [String], _ after: [String]) -> Double {
        Double(zip(before, after).filter { $0 != $1 }.count) / Double(before.count)
    }

    @Test("a client gets the same backend every time, on every node, whatever the table's order and seed")
    func sameClientSameBackend() {
        let backends = makeBackends(5)
        let here = Balancer(policy: .ipHash, backends: backends, seed: 1, nowMillis: 0)
        let there = Balancer(policy: .ipHash, backends: backends.reversed(), seed: 99, nowMillis: 0)
        for client in 0..<1_000 {
            let first = here.pickPosition(client: client)
            let again = here.pickPosition(client: client)
            let elsewhere = there.pickPosition(client: client)
            #expect(first == again)
            #expect(here.states[first].backend.id == there.states[elsewhere].backend.id)
        }
    }

    @Test("10,000 clients spread over 3 to 10 backends within 15% of an even share")
    func clientsSpreadEvenly() {
        for count in 3...10 {
            let balancer = Balancer(policy: .ipHash, backends: makeBackends(count), seed: 1, nowMillis: 0)
            let counts = balancer.shortConnections(10_000)
            let even = 10_000 / Double(count)
            let worst = counts.map { abs(Double($0) - even) / even }.max()!
            print("ip-hash, \(count) backends, 10000 clients: \(counts), worst \(Int(worst * 100))% off even")
            #expect(worst < 0.15)
        }
    }

    @Test("adding or removing one of N backends remaps about 1/N of the clients, where modulo remaps most",
          arguments: [3, 5, 10])
    func churnRemapsAboutOneNth(count: Int) {
        let clients = 10_000
        let balancer = Balancer(policy: .ipHash, backends: makeBackends(count), seed: 1, nowMillis: 0)
        let before = assignedIDs(balancer, clients: clients)

        balancer.update(backends: makeBackends(count + 1), nowMillis: 0)
        let added = movedFraction(before, assignedIDs(balancer, clients: clients))
        balancer.update(backends: makeBackends(count), nowMillis: 0)
        #expect(assignedIDs(balancer, clients: clients) == before)

        balancer.update(backends: Array(makeBackends(count).dropFirst()), nowMillis: 0)
        let after = assignedIDs(balancer, clients: clients)
        let removed = movedFraction(before, after)
        // Clients of the backends that stay (almost) all stay: Maglev's refill may shift a few entries.
        let collateral = zip(before, after).filter { $0 != $1 && $0 != "b0" }.count

        let modulo = (0..<clients).map { Int(clientHash($0) % UInt64(count)) }
        let moduloAdded = Double(zip(modulo, (0..<clients).map { Int(clientHash($0) % UInt64(count + 1)) })
            .filter { $0 != $1 }.count) / Double(clients)

        print("ip-hash, \(count) backends, \(clients) clients: adding one remaps \(formatted([added])) (ideal "
              + "\(formatted([1 / Double(count + 1)]))), removing one \(formatted([removed])) (ideal "
              + "\(formatted([1 / Double(count)]))), \(collateral) clients moved off a remaining backend; "
              + "modulo hashing remaps \(formatted([moduloAdded])) when adding one")
        #expect(added <= 1 / Double(count + 1) + 0.03)
        #expect(removed <= 1 / Double(count) + 0.03)
        #expect(Double(collateral) / Double(clients) < 0.02)
        #expect(moduloAdded > 0.5)
    }

    @Test("ejecting one backend moves only its clients, and each of them to a stable second choice")
    func ejectionMovesOnlyItsClients() {
        let balancer = Balancer(policy: .ipHash, backends: makeBackends(5), seed: 1, nowMillis: 0)
        let before = assignment(balancer, clients: 2_000)
        balancer.fail(2, times: 3, nowMillis: 0)
        let during = assignment(balancer, clients: 2_000, nowMillis: 1)
        let again = assignment(balancer, clients: 2_000, nowMillis: 2)
        let moved = zip(before, during).filter { $0 != $1 }
        print("ip-hash, b2 of 5 ejected: \(moved.count) of 2000 clients moved, all from b2: "
              + "\(moved.allSatisfy { $0.0 == 2 })")
        #expect(moved.allSatisfy { $0.0 == 2 && $0.1 != 2 })
        #expect(moved.count == before.filter { $0 == 2 }.count)
        #expect(during == again)
        // Back from ejection, they return.
        #expect(assignment(balancer, clients: 2_000, nowMillis: 10_000) == before)
    }

    @Test("a client whose backend is draining, full or avoided falls through to the same other backend each time")
    func unavailableBackendFallsThroughStably() {
        let balancer = Balancer(policy: .ipHash, backends: makeBackends(4), seed: 1, nowMillis: 0)
        let client = 77
        let home = balancer.pickPosition(client: client)
        let avoided = balancer.pickPosition(client: client, avoiding: [balancer.states[home]])
        #expect(avoided != home)
        #expect(balancer.pickPosition(client: client, avoiding: [balancer.states[home]]) == avoided)

        var full = makeBackends(4)
        full[home].maxConnections = 1
        balancer.update(backends: full, nowMillis: 0)
        balancer.hold(home)
        #expect(balancer.pickPosition(client: client) == avoided)

        var draining = makeBackends(4)
        draining[home].weight = 0
        balancer.update(backends: draining, nowMillis: 0)
        let elsewhere = balancer.pickPosition(client: client)
        #expect(elsewhere != home)
        #expect(balancer.pickPosition(client: client) == elsewhere)
    }

    @Test("every client still finds a backend when all but one are unavailable")
    func lastBackendStanding() {
        let balancer = Balancer(policy: .ipHash, backends: makeBackends(10), seed: 1, nowMillis: 0)
        let avoiding = Array(balancer.states.dropLast())
        let picks = Set((0..<1_000).map { balancer.pickPosition(client: $0, avoiding: avoiding) })
        #expect(picks == [9])
    }

    @Test("a small table size is rounded up to a prime and still gives every backend clients")
    func smallTable() {
        let options = BalancingOptions(hashTableSize: 100)
        let balancer = Balancer(policy: .ipHash, options: options, backends: makeBackends(7), seed: 1, nowMillis: 0)
        let counts = balancer.shortConnections(7_000)
        print("ip-hash, table of 101 entries, 7 backends, 7000 clients: \(counts)")
        #expect(counts.allSatisfy { $0 > 700 })
    }
}
