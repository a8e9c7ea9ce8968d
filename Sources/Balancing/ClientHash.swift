/// A stable 64-bit hash of a client's address bytes (FNV-1a, then a SplitMix64 finalizer to spread the bits),
/// the same on every node and every run, so ip-hash sends one client to one backend everywhere.
public enum ClientHash {
    public static func of<Bytes: Sequence>(_ bytes: Bytes) -> UInt64 where Bytes.Element == UInt8 {
        StableHash.mix(StableHash.fnv1a(bytes))
    }
}

/// Hashes that are the same on every node and every run (Swift's `Hasher` is seeded per process, so it can't
/// place a client or a backend the same way on two nodes).
enum StableHash {
    static let fnvOffsetBasis: UInt64 = 0xCBF2_9CE4_8422_2325

    static func fnv1a<Bytes: Sequence>(_ bytes: Bytes, basis: UInt64 = fnvOffsetBasis) -> UInt64
    where Bytes.Element == UInt8 {
        var hash = basis
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// SplitMix64's finalizer: every input bit reaches every output bit.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var hash = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        hash = (hash ^ (hash >> 27)) &* 0x94D0_49BB_1331_11EB
        return hash ^ (hash >> 31)
    }

    /// MurmurHash3's finalizer: a second mixer with other constants, for a hash independent of `mix`.
    static func fmix(_ value: UInt64) -> UInt64 {
        var hash = (value ^ (value >> 33)) &* 0xFF51_AFD7_ED55_8CCD
        hash = (hash ^ (hash >> 33)) &* 0xC4CE_B9FE_1A85_EC53
        return hash ^ (hash >> 33)
    }

    /// `hash` reduced to 0..<bound without a division (Lemire's multiply-shift; bias below 2^-32 here).
    @inline(__always)
    static func reduce(_ hash: UInt64, into bound: Int) -> Int {
        Int(truncatingIfNeeded: hash.multipliedFullWidth(by: UInt64(bound)).high)
    }
}
