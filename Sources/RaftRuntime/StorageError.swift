/// What went wrong with the controller's disk, with the file and what to do. A controller stops on any of
/// these rather than carry on with state it cannot trust.
public struct StorageError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        public var description: String { name }
        /// A record in the middle of the log (not a torn tail) fails its checksum or does not parse.
        public static let corrupt = Code(name: "corrupt")
        /// fsync failed: the kernel may have dropped our writes; nothing written since the last fsync is safe.
        public static let fsyncFailed = Code(name: "fsyncFailed")
        /// The disk is full.
        public static let diskFull = Code(name: "diskFull")
        /// Any other I/O error.
        public static let io = Code(name: "io")
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
