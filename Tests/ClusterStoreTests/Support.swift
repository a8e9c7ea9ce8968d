import ClusterModel
import ClusterStore

extension SplitMix64 {
    /// A number in 0..<bound.
    mutating func below(_ bound: Int) -> Int { Int(next(upperBound: UInt64(bound))) }
}

/// A store with its own log position: each `run` applies the next entry.
struct Log {
    var state = ClusterState()

    var nextIndex: UInt64 { state.appliedIndex + 1 }

    @discardableResult
    mutating func run(_ command: [UInt8]) throws(StoreError) -> ApplyOutcome {
        try state.apply(index: nextIndex, command: command)
    }

    mutating func skip() throws(StoreError) {
        try state.skip(index: nextIndex)
    }
}

/// Protobuf encoding by hand, to build what this version's generated code cannot: fields from a newer Flotilla.
enum RawProtobuf {
    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var bytes: [UInt8] = []
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
        return bytes
    }

    /// A length-delimited field (wire type 2).
    static func lengthDelimited(field: UInt64, _ payload: [UInt8]) -> [UInt8] {
        varint(field << 3 | 2) + varint(UInt64(payload.count)) + payload
    }

    /// A varint field (wire type 0).
    static func varintField(field: UInt64, _ value: UInt64) -> [UInt8] {
        varint(field << 3) + varint(value)
    }
}

extension Array where Element == UInt8 {
    init(_ text: String) { self = Array(text.utf8) }
}
