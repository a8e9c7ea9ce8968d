/// The leader's share-out of the cluster's container range: each node gets one subnet of `nodePrefixLength`
/// bits (a /24 of 10.240.0.0/16 by default), always the lowest free one, so the same taken set gives the same
/// answer on every controller. Pure: it keeps no state beyond what it is given, and the store holds the truth
/// (which node has which subnet); rebuild it with `init(cluster:nodePrefixLength:allocated:)`.
public struct SubnetAllocator: Equatable, Sendable {
    /// The cluster's container range.
    public let cluster: IPv4Subnet
    /// The prefix length of every node's subnet.
    public let nodePrefixLength: Int
    private var slots: LowestFreeIndex

    /// The longest node prefix: a /30 still holds a gateway and one task address.
    public static let longestNodePrefixLength = 30

    /// `allocated`: the subnets nodes already have (each must be a `nodePrefixLength` subnet of `cluster`).
    public init(
        cluster: IPv4Subnet, nodePrefixLength: Int = 24, allocated: some Sequence<IPv4Subnet> = [IPv4Subnet]()
    ) throws(NetworkAddressError) {
        guard nodePrefixLength >= cluster.prefixLength, nodePrefixLength <= Self.longestNodePrefixLength else {
            throw NetworkAddressError(
                .invalidPrefixLength,
                "node subnets of /\(nodePrefixLength) do not fit the cluster range \(cluster): choose a prefix length from /\(cluster.prefixLength) to /\(Self.longestNodePrefixLength)")
        }
        self.cluster = cluster
        self.nodePrefixLength = nodePrefixLength
        slots = LowestFreeIndex(capacity: 1 << UInt64(nodePrefixLength - cluster.prefixLength))
        for subnet in allocated { try claim(subnet) }
    }

    /// Parses the cluster range ("10.240.0.0/16") first.
    public init(cluster: String, nodePrefixLength: Int = 24) throws(NetworkAddressError) {
        try self.init(cluster: IPv4Subnet(parsing: cluster), nodePrefixLength: nodePrefixLength)
    }

    /// How many node subnets the cluster range holds.
    public var capacity: UInt64 { slots.capacity }
    /// How many are still free.
    public var available: UInt64 { slots.capacity - UInt64(slots.taken.count) }
    /// The subnets handed out, lowest first.
    public var allocated: [IPv4Subnet] { slots.taken.sorted().map(subnet(at:)) }

    /// The lowest free subnet, now taken.
    public mutating func allocate() throws(NetworkAddressError) -> IPv4Subnet {
        guard let index = slots.take() else {
            throw NetworkAddressError(
                .exhausted,
                "all \(capacity) node subnets (/\(nodePrefixLength)) of \(cluster) are taken: remove nodes that left, or use a larger cluster range or a longer node prefix")
        }
        return subnet(at: index)
    }

    /// Marks `subnet` taken (a node that already has it); an error when it is no node subnet of the cluster range
    /// or already taken.
    public mutating func claim(_ subnet: IPv4Subnet) throws(NetworkAddressError) {
        let index = try index(of: subnet)
        guard slots.claim(index) else {
            throw NetworkAddressError(.alreadyAllocated, "\(subnet) is already allocated to a node")
        }
    }

    /// Frees `subnet` (its node left); false when it was not allocated.
    @discardableResult
    public mutating func release(_ subnet: IPv4Subnet) -> Bool {
        guard let index = try? index(of: subnet) else { return false }
        return slots.release(index)
    }

    private func subnet(at index: UInt64) -> IPv4Subnet {
        let network = cluster.network.value + UInt32(index << UInt64(32 - nodePrefixLength))
        // Cannot throw: the index is below capacity, so the network is aligned and inside the range.
        return try! IPv4Subnet(network: IPv4Address(network), prefixLength: nodePrefixLength)
    }

    private func index(of subnet: IPv4Subnet) throws(NetworkAddressError) -> UInt64 {
        guard subnet.prefixLength == nodePrefixLength, cluster.contains(subnet) else {
            throw NetworkAddressError(.outOfRange, "\(subnet) is not a /\(nodePrefixLength) node subnet of the cluster range \(cluster)")
        }
        return UInt64(subnet.network.value - cluster.network.value) >> UInt64(32 - nodePrefixLength)
    }
}
