/// One operation of a concurrent history, as a client saw it: when it was called, when (and with what) it
/// returned. An operation whose outcome the client never learned (a timeout, a crash, a lost connection) has no
/// return: it may have taken effect at any moment after its call, or never.
public struct Operation<Input: Sendable & Hashable, Output: Sendable & Hashable>: Sendable {
    /// Who issued it (an operation's client waits for it before its next call); for reports only.
    public var client: Int
    /// When it was called and when it returned, on one monotonic clock shared by every client (any unit).
    public var call: UInt64
    public var returned: UInt64?
    public var input: Input
    /// nil exactly when `returned` is nil.
    public var output: Output?

    public init(client: Int, call: UInt64, returned: UInt64?, input: Input, output: Output?) {
        self.client = client
        self.call = call
        self.returned = returned
        self.input = input
        self.output = returned == nil ? nil : output
    }
}

/// A sequential specification of an object: what each operation may do to its state, given what it returned.
public protocol SequentialModel: Sendable {
    associatedtype State: Hashable & Sendable
    associatedtype Input: Hashable & Sendable
    associatedtype Output: Hashable & Sendable

    var initial: State { get }

    /// The states `input` may lead to from `state` when it returned `output`; an empty list when it could not
    /// have returned that from there. With `output` nil (the outcome is unknown) every possible outcome counts,
    /// including, for an operation that changes state, not having happened.
    func step(_ state: State, _ input: Input, _ output: Output?) -> [State]
}

/// A key-value store's register: read, write (nil deletes) and compare-and-set on the value.
public struct RegisterModel: SequentialModel {
    public enum Input: Hashable, Sendable, CustomStringConvertible {
        case read
        case write(String?)
        /// Sets `new` if the value is `expected` (nil: absent).
        case compareAndSet(expected: String?, new: String)

        public var description: String {
            switch self {
            case .read: "read"
            case .write(let value): "write(\(value ?? "∅"))"
            case .compareAndSet(let expected, let new): "cas(\(expected ?? "∅") → \(new))"
            }
        }
    }

    public enum Output: Hashable, Sendable, CustomStringConvertible {
        case value(String?)
        case ok
        case failed

        public var description: String {
            switch self {
            case .value(let value): value ?? "∅"
            case .ok: "ok"
            case .failed: "failed"
            }
        }
    }

    public init() {}

    public var initial: String? { nil }

    public func step(_ state: String?, _ input: Input, _ output: Output?) -> [String?] {
        switch (input, output) {
        case (.read, nil): return [state]
        case (.read, .value(let seen)?): return seen == state ? [state] : []
        case (.write(let value), nil): return [value, state]
        case (.write(let value), .ok?): return [value]
        case (.compareAndSet(let expected, let new), nil): return state == expected ? [new, state] : [state]
        case (.compareAndSet(let expected, let new), .ok?): return state == expected ? [new] : []
        case (.compareAndSet(let expected, _), .failed?): return state != expected ? [state] : []
        default: return []
        }
    }
}
