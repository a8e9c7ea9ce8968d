/// The host addresses of a subnet from offset `firstOffset` up to, not including, the broadcast address,
/// handed out lowest first: the bookkeeping under `TaskAddressAllocator` and `VirtualIPAllocator`, which
/// differ only in how many addresses at the start are reserved and in what their errors say.
struct AddressPool: Equatable, Sendable {
    let subnet: IPv4Subnet
    let firstOffset: UInt64
    private var slots: LowestFreeIndex

    /// Why an address cannot be claimed.
    enum ClaimFailure: Error {
        case outside, reserved, taken
    }

    /// The subnet must leave at least one address between the reserved ones and the broadcast address.
    init(subnet: IPv4Subnet, firstOffset: UInt64) {
        self.subnet = subnet
        self.firstOffset = firstOffset
        slots = LowestFreeIndex(capacity: subnet.size > firstOffset + 1 ? subnet.size - firstOffset - 1 : 0)
    }

    var capacity: UInt64 { slots.capacity }
    var available: UInt64 { slots.capacity - UInt64(slots.taken.count) }
    var allocated: [IPv4Address] { slots.taken.sorted().map(address(at:)) }

    /// The lowest free address, now taken; nil when all are.
    mutating func take() -> IPv4Address? { slots.take().map(address(at:)) }

    mutating func claim(_ address: IPv4Address) throws(ClaimFailure) {
        let index = try index(of: address)
        guard slots.claim(index) else { throw .taken }
    }

    mutating func release(_ address: IPv4Address) -> Bool {
        guard let index = try? index(of: address) else { return false }
        return slots.release(index)
    }

    private func address(at index: UInt64) -> IPv4Address { IPv4Address(subnet.network.value + UInt32(index + firstOffset)) }

    private func index(of address: IPv4Address) throws(ClaimFailure) -> UInt64 {
        guard let offset = subnet.offset(of: address) else { throw .outside }
        guard offset >= firstOffset, offset < subnet.size - 1 else { throw .reserved }
        return offset - firstOffset
    }
}
