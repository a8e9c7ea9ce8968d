import ClusterModel
import Testing

@Suite("IPv4 addresses and subnets")
struct IPv4SubnetTests {
    @Test("dotted quads parse and print back; malformed ones are refused")
    func addresses() {
        #expect(IPv4Address("10.240.0.1")?.value == 0x0AF0_0001)
        #expect(IPv4Address("255.255.255.255")?.description == "255.255.255.255")
        #expect(IPv4Address("0.0.0.0")?.value == 0)
        for bad in ["", "10.240.0", "10.240.0.1.2", "256.0.0.1", "10.240.0.01", "10..0.1", "a.b.c.d", "10.240.0.-1", "+1.2.3.4", "١.2.3.4"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
    }

    @Test("CIDR text parses to a network; host bits, bad lengths and junk are refused with a reason")
    func subnets() throws {
        let cluster = try IPv4Subnet(parsing: "10.240.0.0/16")
        #expect(cluster.description == "10.240.0.0/16")
        #expect(cluster.size == 65536)
        #expect(cluster.broadcast.description == "10.240.255.255")
        #expect(cluster.contains(IPv4Address("10.240.7.9")!))
        #expect(!cluster.contains(IPv4Address("10.241.0.0")!))
        #expect(cluster.contains(try IPv4Subnet(parsing: "10.240.3.0/24")))
        #expect(!(try IPv4Subnet(parsing: "10.240.3.0/24")).contains(cluster))
        #expect(cluster.overlaps(try IPv4Subnet(parsing: "10.0.0.0/8")))
        #expect(!cluster.overlaps(try IPv4Subnet(parsing: "10.241.0.0/16")))
        #expect(try IPv4Subnet(parsing: "0.0.0.0/0").size == 1 << 32)

        let hostBits = #expect(throws: NetworkAddressError.self) { try IPv4Subnet(parsing: "10.240.0.1/16") }
        #expect(hostBits?.code == .invalidSubnet)
        #expect(hostBits?.message.contains("the network is 10.240.0.0/16") == true)
        for bad in ["10.240.0.0", "10.240.0.0/33", "10.240.0.0/-1", "10.240.0.0/", "/16", "10.240.0.0/16/1", "10.240.0/16", "10.240.0.0/016"] {
            #expect(throws: NetworkAddressError.self, "\(bad)") { try IPv4Subnet(parsing: bad) }
        }
    }
}

@Suite("Subnet allocation: node subnets from the cluster range")
struct SubnetAllocatorTests {
    @Test("node subnets are handed out lowest first, and a released one is the next handed out")
    func lowestFirst() throws {
        var allocator = try SubnetAllocator(cluster: "10.240.0.0/16")
        #expect(allocator.capacity == 256)
        #expect(try allocator.allocate().description == "10.240.0.0/24")
        #expect(try allocator.allocate().description == "10.240.1.0/24")
        #expect(try allocator.allocate().description == "10.240.2.0/24")
        let released1 = allocator.release(try IPv4Subnet(parsing: "10.240.1.0/24"))
        #expect(released1)
        let releasedTwice = allocator.release(try IPv4Subnet(parsing: "10.240.1.0/24"))
        #expect(!releasedTwice, "released twice")
        #expect(try allocator.allocate().description == "10.240.1.0/24")
        #expect(try allocator.allocate().description == "10.240.3.0/24")
        #expect(allocator.available == 252)
    }

    @Test("the taken set alone decides the answer: an allocator rebuilt from it gives the lowest free subnet")
    func rebuiltFromTakenSet() throws {
        let cluster = try IPv4Subnet(parsing: "10.240.0.0/16")
        let taken = try ["10.240.0.0/24", "10.240.1.0/24", "10.240.3.0/24"].map { try IPv4Subnet(parsing: $0) }
        var allocator = try SubnetAllocator(cluster: cluster, allocated: taken.reversed())
        #expect(allocator.allocated == taken)
        #expect(try allocator.allocate().description == "10.240.2.0/24")
        #expect(try allocator.allocate().description == "10.240.4.0/24")
    }

    @Test("other node prefix lengths carve the range accordingly")
    func prefixLengths() throws {
        var small = try SubnetAllocator(cluster: "10.240.0.0/16", nodePrefixLength: 26)
        #expect(small.capacity == 1024)
        #expect(try small.allocate().description == "10.240.0.0/26")
        #expect(try small.allocate().description == "10.240.0.64/26")
        var whole = try SubnetAllocator(cluster: "10.240.0.0/16", nodePrefixLength: 16)
        #expect(try whole.allocate().description == "10.240.0.0/16")
        #expect(throws: NetworkAddressError.self) { try whole.allocate() }
    }

    @Test("a node prefix that does not fit the range is refused, saying which lengths would")
    func badPrefixLengths() throws {
        let wide = #expect(throws: NetworkAddressError.self) { try SubnetAllocator(cluster: "10.240.0.0/16", nodePrefixLength: 12) }
        #expect(wide?.code == .invalidPrefixLength)
        #expect(wide?.message.contains("from /16 to /30") == true)
        let narrow = #expect(throws: NetworkAddressError.self) { try SubnetAllocator(cluster: "10.240.0.0/16", nodePrefixLength: 31) }
        #expect(narrow?.code == .invalidPrefixLength)
        let cidr = #expect(throws: NetworkAddressError.self) { try SubnetAllocator(cluster: "10.240.0.0/33") }
        #expect(cidr?.code == .invalidSubnet)
    }

    @Test("a full range says so, and what to do about it")
    func exhaustion() throws {
        var allocator = try SubnetAllocator(cluster: "10.240.0.0/22")
        for _ in 0..<4 { _ = try allocator.allocate() }
        let error = #expect(throws: NetworkAddressError.self) { try allocator.allocate() }
        #expect(error?.code == .exhausted)
        #expect(error?.message == "all 4 node subnets (/24) of 10.240.0.0/22 are taken: remove nodes that left, or use a larger cluster range or a longer node prefix")
    }

    @Test("claims outside the range, of the wrong size, or twice are refused")
    func badClaims() throws {
        var allocator = try SubnetAllocator(cluster: "10.240.0.0/16")
        try allocator.claim(IPv4Subnet(parsing: "10.240.9.0/24"))
        #expect(throws: NetworkAddressError(.alreadyAllocated, "10.240.9.0/24 is already allocated to a node")) {
            try allocator.claim(IPv4Subnet(parsing: "10.240.9.0/24"))
        }
        #expect(throws: NetworkAddressError(.outOfRange, "10.241.0.0/24 is not a /24 node subnet of the cluster range 10.240.0.0/16")) {
            try allocator.claim(IPv4Subnet(parsing: "10.241.0.0/24"))
        }
        #expect(throws: NetworkAddressError.self) { try allocator.claim(IPv4Subnet(parsing: "10.240.8.0/25")) }
        let released2 = allocator.release(try IPv4Subnet(parsing: "10.241.0.0/24"))
        #expect(!released2)
    }

    @Test("seeded random allocate/release sequences never hand out a subnet twice, and always the lowest free", arguments: [UInt64(1), 2, 3, 42, 2026])
    func randomSequences(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var allocator = try SubnetAllocator(cluster: "10.240.0.0/20", nodePrefixLength: 26) // 64 subnets
        let all = (0..<64).map { try! IPv4Subnet(network: IPv4Address(0x0AF0_0000 + UInt32($0) * 64), prefixLength: 26) }
        var held = Set<IPv4Subnet>()
        for _ in 0..<2_000 {
            if held.isEmpty || (held.count < all.count && random.next() % 3 != 0) {
                let subnet = try allocator.allocate()
                #expect(!held.contains(subnet), "handed out twice: \(subnet)")
                #expect(subnet == all.first { !held.contains($0) }, "not the lowest free")
                held.insert(subnet)
            } else if held.count == all.count && random.next() % 2 == 0 {
                #expect(throws: NetworkAddressError.self) { try allocator.allocate() }
            } else {
                let victim = held.sorted()[Int(random.next() % UInt64(held.count))]
                let released3 = allocator.release(victim)
                #expect(released3)
                held.remove(victim)
            }
            #expect(Set(allocator.allocated) == held)
            // Rebuilt from the taken set alone, it agrees with the allocator that lived through the sequence.
            #expect(try SubnetAllocator(cluster: allocator.cluster, nodePrefixLength: 26, allocated: held) == allocator)
        }
    }
}

@Suite("Task addresses: IPAM within a node subnet")
struct TaskAddressAllocatorTests {
    @Test("the network, gateway and broadcast addresses are never handed out")
    func reserved() throws {
        var allocator = try TaskAddressAllocator(subnet: IPv4Subnet(parsing: "10.240.3.0/24"))
        #expect(allocator.gateway.description == "10.240.3.1")
        #expect(allocator.capacity == 253)
        var handedOut: [IPv4Address] = []
        for _ in 0..<253 { handedOut.append(try allocator.allocate()) }
        #expect(handedOut.first?.description == "10.240.3.2")
        #expect(handedOut.last?.description == "10.240.3.254")
        #expect(Set(handedOut).count == 253)
        let error = #expect(throws: NetworkAddressError.self) { try allocator.allocate() }
        #expect(error?.code == .exhausted)
        #expect(error?.message.contains("all 253 task addresses of 10.240.3.0/24 are taken") == true)
        for reserved in ["10.240.3.0", "10.240.3.1", "10.240.3.255"] {
            let refused = #expect(throws: NetworkAddressError.self) { try allocator.claim(IPv4Address(reserved)!) }
            #expect(refused?.code == .outOfRange)
            #expect(refused?.message.contains("reserved") == true)
        }
    }

    @Test("a /30 holds exactly one task; a /31 holds none and is refused")
    func smallSubnets() throws {
        var thirty = try TaskAddressAllocator(subnet: IPv4Subnet(parsing: "10.240.3.4/30"))
        #expect(try thirty.allocate().description == "10.240.3.6")
        #expect(throws: NetworkAddressError.self) { try thirty.allocate() }
        let error = #expect(throws: NetworkAddressError.self) { try TaskAddressAllocator(subnet: IPv4Subnet(parsing: "10.240.3.4/31")) }
        #expect(error?.code == .invalidPrefixLength)
    }

    @Test("rebuilt from the addresses tasks hold, it continues at the lowest free one; foreign addresses are refused")
    func rebuilt() throws {
        let subnet = try IPv4Subnet(parsing: "10.240.3.0/24")
        var allocator = try TaskAddressAllocator(subnet: subnet, allocated: ["10.240.3.2", "10.240.3.4"].map { IPv4Address($0)! })
        #expect(try allocator.allocate().description == "10.240.3.3")
        #expect(try allocator.allocate().description == "10.240.3.5")
        let released4 = allocator.release(IPv4Address("10.240.3.2")!)
        #expect(released4)
        let released5 = allocator.release(IPv4Address("10.240.3.2")!)
        #expect(!released5)
        let released6 = allocator.release(IPv4Address("10.9.9.9")!)
        #expect(!released6)
        #expect(try allocator.allocate().description == "10.240.3.2")
        #expect(throws: NetworkAddressError(.outOfRange, "10.240.4.2 is outside the node subnet 10.240.3.0/24")) {
            try allocator.claim(IPv4Address("10.240.4.2")!)
        }
        #expect(throws: NetworkAddressError(.alreadyAllocated, "10.240.3.3 is already held by a task")) {
            try allocator.claim(IPv4Address("10.240.3.3")!)
        }
    }

    @Test("seeded random allocate/release sequences never hand out an address twice, and always the lowest free", arguments: [UInt64(7), 8, 9, 1234])
    func randomSequences(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let subnet = try IPv4Subnet(parsing: "10.240.3.0/26") // 61 task addresses
        var allocator = try TaskAddressAllocator(subnet: subnet)
        let all = (2..<63).map { subnet.address(at: UInt64($0))! }
        var held = Set<IPv4Address>()
        for _ in 0..<2_000 {
            if held.isEmpty || (held.count < all.count && random.next() % 3 != 0) {
                let address = try allocator.allocate()
                #expect(!held.contains(address), "handed out twice: \(address)")
                #expect(address == all.first { !held.contains($0) }, "not the lowest free")
                held.insert(address)
            } else if held.count == all.count && random.next() % 2 == 0 {
                #expect(throws: NetworkAddressError.self) { try allocator.allocate() }
            } else {
                let victim = held.sorted()[Int(random.next() % UInt64(held.count))]
                let released7 = allocator.release(victim)
                #expect(released7)
                held.remove(victim)
            }
            #expect(Set(allocator.allocated) == held)
            #expect(try TaskAddressAllocator(subnet: subnet, allocated: held) == allocator)
        }
    }
}

@Suite("Virtual IPs: one address per service from the service network")
struct VirtualIPAllocatorTests {
    @Test("the network and broadcast addresses are never handed out; the first is the network's first host")
    func reservedAddresses() throws {
        var allocator = try VirtualIPAllocator(network: IPv4Subnet(parsing: "10.96.0.0/30"))
        #expect(allocator.capacity == 2)
        #expect(try allocator.allocate().description == "10.96.0.1")
        #expect(try allocator.allocate().description == "10.96.0.2")
        let full = #expect(throws: NetworkAddressError.self) { try allocator.allocate() }
        #expect(full?.code == .exhausted)
        #expect(full?.message == "all 2 virtual IPs of the service network 10.96.0.0/30 are taken: remove services that are no longer needed")
        #expect(try VirtualIPAllocator(network: IPv4Subnet(parsing: "10.96.0.0/16")).capacity == 65_534)
    }

    @Test("rebuilt from the addresses services hold, it continues at the lowest free one; foreign or taken ones are refused")
    func rebuilt() throws {
        let network = try IPv4Subnet(parsing: "10.96.0.0/24")
        var allocator = try VirtualIPAllocator(network: network, allocated: ["10.96.0.3", "10.96.0.1"].map { IPv4Address($0)! })
        #expect(allocator.allocated.map(\.description) == ["10.96.0.1", "10.96.0.3"])
        #expect(try allocator.allocate().description == "10.96.0.2")
        #expect(try allocator.allocate().description == "10.96.0.4")
        let released = allocator.release(IPv4Address("10.96.0.1")!)
        #expect(released)
        #expect(try allocator.allocate().description == "10.96.0.1")
        for (address, code) in [("10.97.0.1", NetworkAddressError.Code.outOfRange), ("10.96.0.0", .outOfRange),
                                ("10.96.0.255", .outOfRange), ("10.96.0.2", .alreadyAllocated)] {
            let error = #expect(throws: NetworkAddressError.self, "\(address)") { try allocator.claim(IPv4Address(address)!) }
            #expect(error?.code == code, "\(address)")
        }
        #expect(throws: NetworkAddressError.self) { try VirtualIPAllocator(network: IPv4Subnet(parsing: "10.96.0.0/31")) }
    }
}
