/// A node's share-out of its subnet to its tasks (IPAM): the lowest free address each time, never the network
/// address, the gateway (the first host address, which the node's bridge holds) or the broadcast address.
/// Pure; the agent rebuilds it after a restart from the addresses its tasks still hold.
public struct TaskAddressAllocator: Equatable, Sendable {
    /// The node's subnet.
    public var subnet: IPv4Subnet { pool.subnet }
    private var pool: AddressPool

    /// The address the node's bridge holds and its tasks route through: the subnet's first host address.
    public static func gateway(of subnet: IPv4Subnet) -> IPv4Address { IPv4Address(subnet.network.value + 1) }

    /// `allocated`: addresses tasks already hold. The subnet must be a /30 or larger (room for one task).
    public init(subnet: IPv4Subnet, allocated: some Sequence<IPv4Address> = [IPv4Address]()) throws(NetworkAddressError) {
        guard subnet.prefixLength <= SubnetAllocator.longestNodePrefixLength else {
            throw NetworkAddressError(
                .invalidPrefixLength,
                "\(subnet) has no room for tasks (network, gateway and broadcast take it all): node subnets must be /\(SubnetAllocator.longestNodePrefixLength) or larger")
        }
        // Offsets 0 (network), 1 (gateway) and the last (broadcast) are never handed out.
        pool = AddressPool(subnet: subnet, firstOffset: 2)
        for address in allocated { try claim(address) }
    }

    /// The address the node's bridge holds.
    public var gateway: IPv4Address { Self.gateway(of: subnet) }
    /// How many task addresses the subnet holds.
    public var capacity: UInt64 { pool.capacity }
    /// How many are still free.
    public var available: UInt64 { pool.available }
    /// The addresses handed out, lowest first.
    public var allocated: [IPv4Address] { pool.allocated }

    /// The lowest free address, now taken.
    public mutating func allocate() throws(NetworkAddressError) -> IPv4Address {
        guard let address = pool.take() else {
            throw NetworkAddressError(
                .exhausted,
                "all \(capacity) task addresses of \(subnet) are taken: the node runs as many tasks as its subnet holds; give nodes larger subnets (a shorter node prefix)")
        }
        return address
    }

    /// Marks `address` taken (a task that already holds it); an error when it is outside the subnet, reserved,
    /// or already taken.
    public mutating func claim(_ address: IPv4Address) throws(NetworkAddressError) {
        do throws(AddressPool.ClaimFailure) {
            try pool.claim(address)
        } catch {
            switch error {
            case .outside: throw NetworkAddressError(.outOfRange, "\(address) is outside the node subnet \(subnet)")
            case .reserved: throw NetworkAddressError(.outOfRange, "\(address) is reserved in \(subnet) (network, gateway or broadcast address)")
            case .taken: throw NetworkAddressError(.alreadyAllocated, "\(address) is already held by a task")
            }
        }
    }

    /// Frees `address` (its task was removed); false when it was not taken.
    @discardableResult
    public mutating func release(_ address: IPv4Address) -> Bool { pool.release(address) }
}
