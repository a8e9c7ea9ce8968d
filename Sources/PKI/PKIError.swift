/// The one error type the PKI module throws.
///
/// `code` is for programs (match on it); `message` is for people: it says what was wrong and, where there
/// is one, what to do about it ("no credentials at /etc/flotilla/admin.pem; run `flotilla-controller --init` ...").
public struct PKIError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. A struct rather than an enum so that codes can be added without
    /// breaking callers that switch over them.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String

        private init(_ name: String) { self.name = name }

        public var description: String { name }

        /// A certificate subject does not carry a Flotilla identity (missing or repeated CN/OU/O, unknown role).
        public static let invalidIdentity = Code("invalidIdentity")
        /// Arguments to issuance were unusable (empty cluster or node id, an IP address that does not parse,
        /// a non-positive validity).
        public static let invalidRequest = Code("invalidRequest")
        /// A key or certificate is of a kind the cluster does not use, or a key does not match its certificate.
        public static let invalidKey = Code("invalidKey")
        /// A certificate is not what its position requires (a CA that is not a CA, a certificate not issued by
        /// the bundled CA).
        public static let invalidCertificate = Code("invalidCertificate")
        /// PEM text is missing a block, has an unexpected block, or a block does not decode.
        public static let invalidPEM = Code("invalidPEM")
        /// The file to load does not exist.
        public static let fileNotFound = Code("fileNotFound")
        /// The file exists but could not be read, or could not be written.
        public static let fileAccess = Code("fileAccess")
        /// The underlying X.509 or ASN.1 library failed to build or serialize a certificate.
        public static let encoding = Code("encoding")
        /// A join token is malformed or of an unknown format.
        public static let invalidToken = Code("invalidToken")
        /// The server's CA is not the one a join token pins: another cluster.
        public static let wrongCluster = Code("wrongCluster")
        /// A certificate signing request is malformed, not self-signed by its key, or for a key the cluster
        /// does not use.
        public static let invalidSigningRequest = Code("invalidSigningRequest")
    }

    /// What kind of failure this is.
    public var code: Code
    /// A sentence a person can act on.
    public var message: String

    /// Creates an error; `message` should name the thing at fault and, where possible, the remedy.
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
