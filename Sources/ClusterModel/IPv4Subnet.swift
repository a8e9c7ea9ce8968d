/// An IPv4 address as a 32-bit number (host order), so subnets and allocators can do arithmetic on it.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    /// The address as a number: 10.240.0.1 is 0x0AF0_0001.
    public let value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Parses dotted-quad text ("10.240.0.1"); nil for anything else (leading zeros are refused, since some
    /// tools read them as octal).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCII), part.allSatisfy(\.isNumber),
                  part == "0" || !part.hasPrefix("0"), let octet = UInt32(part), octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        self.value = value
    }

    public var description: String {
        "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }
}

/// An IPv4 network in CIDR form ("10.240.0.0/16"): the cluster's container range, a node's share of it, or the
/// network of a node's bridge. The network address has no host bits set.
public struct IPv4Subnet: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    /// The first address of the network.
    public let network: IPv4Address
    /// 0...32: how many leading bits name the network.
    public let prefixLength: Int

    /// `network` must have no bits set past `prefixLength`.
    public init(network: IPv4Address, prefixLength: Int) throws(NetworkAddressError) {
        guard (0...32).contains(prefixLength) else {
            throw NetworkAddressError(.invalidSubnet, "prefix length /\(prefixLength) is not between /0 and /32")
        }
        let mask = Self.mask(prefixLength)
        guard network.value & ~mask == 0 else {
            let suggestion = IPv4Address(network.value & mask)
            throw NetworkAddressError(
                .invalidSubnet, "\(network)/\(prefixLength) has host bits set; the network is \(suggestion)/\(prefixLength)")
        }
        self.network = network
        self.prefixLength = prefixLength
    }

    /// Parses "A.B.C.D/N", refusing host bits past the prefix ("10.240.0.1/16" names no network).
    public init(parsing text: String) throws(NetworkAddressError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let address = IPv4Address(parts[0]), parts[1].allSatisfy(\.isASCII),
              parts[1].allSatisfy(\.isNumber), let length = Int(parts[1]), parts[1].count <= 2 else {
            throw NetworkAddressError(.invalidSubnet, "'\(text)' is not an IPv4 network in CIDR form, like 10.240.0.0/16")
        }
        try self.init(network: address, prefixLength: length)
    }

    /// The netmask as a number: /24 is 0xFFFF_FF00.
    static func mask(_ prefixLength: Int) -> UInt32 {
        prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength)
    }

    /// How many addresses the network spans, network and broadcast included (2^(32 − prefix length)).
    public var size: UInt64 { 1 << UInt64(32 - prefixLength) }

    /// The last address of the network.
    public var broadcast: IPv4Address { IPv4Address(network.value | ~Self.mask(prefixLength)) }

    /// The address `offset` places after the network address; nil past the end.
    public func address(at offset: UInt64) -> IPv4Address? {
        offset < size ? IPv4Address(network.value + UInt32(offset)) : nil
    }

    /// Where `address` lies in the network (0 is the network address); nil when outside it.
    public func offset(of address: IPv4Address) -> UInt64? {
        contains(address) ? UInt64(address.value - network.value) : nil
    }

    public func contains(_ address: IPv4Address) -> Bool {
        address.value & Self.mask(prefixLength) == network.value
    }

    /// Whether `other` lies wholly inside this network.
    public func contains(_ other: IPv4Subnet) -> Bool {
        other.prefixLength >= prefixLength && contains(other.network)
    }

    /// Whether the two networks share any address (then one contains the other).
    public func overlaps(_ other: IPv4Subnet) -> Bool { contains(other) || other.contains(self) }

    public var description: String { "\(network)/\(prefixLength)" }

    public static func < (lhs: IPv4Subnet, rhs: IPv4Subnet) -> Bool {
        (lhs.network, lhs.prefixLength) < (rhs.network, rhs.prefixLength)
    }
}

/// A bad network address, subnet or allocation request, with a message a person can act on.
public struct NetworkAddressError: Error, Equatable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        /// Text that is no IPv4 network in CIDR form, or one with host bits set or an impossible prefix length.
        public static let invalidSubnet = Code(name: "invalid subnet")
        /// A node prefix length that does not fit the cluster's range, or a node subnet too small for tasks.
        public static let invalidPrefixLength = Code(name: "invalid prefix length")
        /// Every subnet or address is taken.
        public static let exhausted = Code(name: "exhausted")
        /// A subnet or address outside the range being allocated from, or one that is reserved.
        public static let outOfRange = Code(name: "out of range")
        /// A subnet or address claimed twice.
        public static let alreadyAllocated = Code(name: "already allocated")
        public var description: String { name }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
