// The CA lives on controllers as one PEM file: its certificate, then its private key.

extension CertificateAuthority {
    /// The file name a controller keeps its CA in, inside its data directory.
    public static let fileName = "ca.pem"

    /// What to do when no CA file is found.
    static let missingRemedy = "run `flotilla-controller --init` to create the cluster"

    /// The CA as PEM text: a CERTIFICATE block, then a PRIVATE KEY block (PKCS#8).
    public func pemBundle() throws -> String {
        try PEMBundle.text(certificates: [certificate], privateKey: privateKey)
    }

    /// Reads a CA from the text ``pemBundle()`` writes. Throws ``PKIError`` naming what is missing or garbled.
    public init(pemBundle: String) throws {
        try self.init(pemBundle: pemBundle, source: "cluster CA")
    }

    private init(pemBundle: String, source: String) throws {
        let bundle = try PEMBundle(pemBundle, what: source, certificateNames: ["the CA certificate"])
        do {
            try self.init(certificate: bundle.certificates[0], privateKey: bundle.privateKey)
        } catch let error as PKIError {
            throw PKIError(code: error.code, message: "\(source): \(error.message)")
        }
    }

    /// Writes ``pemBundle()`` to `path` atomically with mode 0600. The file holds the CA key: keep it on
    /// controllers only.
    public func write(to path: String) throws {
        try SecureFile.save(pemBundle(), to: path, what: "the cluster CA")
    }

    /// Reads a CA written by ``write(to:)``. Errors name `path` and say what to do.
    public static func load(from path: String) throws -> CertificateAuthority {
        let text = try SecureFile.contents(of: path, what: "cluster CA", remedy: missingRemedy)
        return try CertificateAuthority(pemBundle: text, source: "cluster CA at \(path)")
    }

    /// Where a controller with data directory `dataDirectory` keeps its CA: `<dataDirectory>/ca.pem`.
    public static func path(inDataDirectory dataDirectory: String) -> String {
        dataDirectory.hasSuffix("/") ? dataDirectory + fileName : dataDirectory + "/" + fileName
    }
}
