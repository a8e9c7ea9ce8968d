/// The protocol's major version, exchanged in HELLO. Peers with different major versions refuse each other
/// with a message naming both. Bump it only for a change an older peer cannot understand; additions (new
/// frame flags it may ignore, new capabilities, new message fields, new methods) keep the version.
public enum ProtocolVersion {
    public static let current: UInt32 = 1
}

/// Capability names a peer may list in its HELLO.
public enum Capability {
    /// The peer reads zlib-compressed frames (flag COMPRESSED).
    public static let zlib = "zlib"
}

/// The software version of this build of Flotilla, reported by `status` and in HELLO.
public enum FlotillaVersion {
    public static let current = "0.1.0"
}
