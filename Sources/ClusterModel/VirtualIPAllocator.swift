/// The share-out of the service network to services: each service gets one virtual IP, always the lowest free
/// one (never the network or broadcast address), so the same taken set gives the same answer on every
/// controller. Pure; the store holds the truth (which service has which address) and rebuilds it from there.
public struct VirtualIPAllocator: Equatable, Sendable {
    /// The service network.
    public var network: IPv4Subnet { pool.subnet }
    private var pool: AddressPool

    /// `allocated`: the addresses services already have. The network must be a /30 or larger.
    public init(network: IPv4Subnet, allocated: some Sequence<IPv4Address> = [IPv4Address]()) throws(NetworkAddressError) {
        guard network.prefixLength <= 30 else {
            throw NetworkAddressError(.invalidPrefixLength, "the service network \(network) is too small: use a /30 or larger")
        }
        pool = AddressPool(subnet: network, firstOffset: 1)
        for address in allocated { try claim(address) }
    }

    /// How many virtual IPs the network holds.
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
                "all \(capacity) virtual IPs of the service network \(network) are taken: remove services that are no longer needed")
        }
        return address
    }

    /// Marks `address` taken (a service that already has it); an error when it is outside the network, its
    /// network or broadcast address, or already taken.
    public mutating func claim(_ address: IPv4Address) throws(NetworkAddressError) {
        do throws(AddressPool.ClaimFailure) {
            try pool.claim(address)
        } catch {
            switch error {
            case .outside: throw NetworkAddressError(.outOfRange, "\(address) is outside the service network \(network)")
            case .reserved: throw NetworkAddressError(.outOfRange, "\(address) is the network or broadcast address of \(network)")
            case .taken: throw NetworkAddressError(.alreadyAllocated, "\(address) is already another service's virtual IP")
            }
        }
    }

    /// Frees `address` (its service was removed); false when it was not taken.
    @discardableResult
    public mutating func release(_ address: IPv4Address) -> Bool { pool.release(address) }
}
