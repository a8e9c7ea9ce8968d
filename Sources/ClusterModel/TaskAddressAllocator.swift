/// A node's share-out of its subnet to its tasks (IPAM): the lowest free address each time, never the network
/// address, the gateway (the first host address, which the node's bridge holds) or the broadcast address.
/// Pure; the agent rebuilds it after a restart from the addresses its tasks still hold.
public struct TaskAddressAllocator: Equatable, Sendable {
    /// The node's subnet.
    public let subnet: IPv4Subnet
    private var slots: LowestFreeIndex

    /// The address the node's bridge holds and its tasks route through: the subnet's first host address.
    public static func gateway(of subnet: IPv4Subnet) -> IPv4Address { IPv4Address(subnet.network.value + 1) }

    /// `allocated`: addresses tasks already hold. The subnet must be a /30 or larger (room for one task).
    public init(subnet: IPv4Subnet, allocated: some Sequence<IPv4Address> = [IPv4Address]()) throws(NetworkAddressError) {
        guard subnet.prefixLength <= SubnetAllocator.longestNodePrefixLength else {
            throw NetworkAddressError(
                .invalidPrefixLength,
                "\(subnet) has no room for tasks (network, gateway and broadcast take it all): node subnets must be /\(SubnetAllocator.longestNodePrefixLength) or larger")
        }
        self.subnet = subnet
        // Offsets 0 (network), 1 (gateway) and the last (broadcast) are never handed out.
        slots = LowestFreeIndex(capacity: subnet.size - 3)
        for address in allocated { try claim(address) }
    }

    /// The address the node's bridge holds.
    public var gateway: IPv4Address { Self.gateway(of: subnet) }
    /// How many task addresses the subnet holds.
    public var capacity: UInt64 { slots.capacity }
    /// How many are still free.
    public var available: UInt64 { slots.capacity - UInt64(slots.taken.count) }
    /// The addresses handed out, lowest first.
    public var allocated: [IPv4Address] { slots.taken.sorted().map(address(at:)) }

    /// The lowest free address, now taken.
    public mutating func allocate() throws(NetworkAddressError) -> IPv4Address {
        guard let index = slots.take() else {
            throw NetworkAddressError(
                .exhausted,
                "all \(capacity) task addresses of \(subnet) are taken: the node runs as many tasks as its subnet holds; give nodes larger subnets (a shorter node prefix)")
        }
        return address(at: index)
    }

    /// Marks `address` taken (a task that already holds it); an error when it is outside the subnet, reserved,
    /// or already taken.
    public mutating func claim(_ address: IPv4Address) throws(NetworkAddressError) {
        let index = try index(of: address)
        guard slots.claim(index) else {
            throw NetworkAddressError(.alreadyAllocated, "\(address) is already held by a task")
        }
    }

    /// Frees `address` (its task was removed); false when it was not taken.
    @discardableResult
    public mutating func release(_ address: IPv4Address) -> Bool {
        guard let index = try? index(of: address) else { return false }
        return slots.release(index)
    }

    private func address(at index: UInt64) -> IPv4Address { IPv4Address(subnet.network.value + UInt32(index + 2)) }

    private func index(of address: IPv4Address) throws(NetworkAddressError) -> UInt64 {
        guard let offset = subnet.offset(of: address) else {
            throw NetworkAddressError(.outOfRange, "\(address) is outside the node subnet \(subnet)")
        }
        guard offset >= 2, offset < subnet.size - 1 else {
            throw NetworkAddressError(.outOfRange, "\(address) is reserved in \(subnet) (network, gateway or broadcast address)")
        }
        return offset - 2
    }
}
