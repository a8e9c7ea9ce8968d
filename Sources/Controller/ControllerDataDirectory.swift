public import ClusterModel
import ClusterStore
public import Foundation
import Messages
public import PKI
import Raft
import RaftRuntime

/// What a controller keeps on disk, and how `--init` creates it.
///
/// Layout of the data directory (mode 0700):
/// - `ca.pem`            the cluster CA certificate and key (0600); controllers only
/// - `controller.creds`  this controller's credentials (0600)
/// - `admin.creds`       admin credentials written by `--init` for the `flotilla` CLI (0600)
public struct ControllerDataDirectory: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    public var caPath: String { path + "/ca.pem" }
    public var credentialsPath: String { path + "/controller.creds" }
    public var adminCredentialsPath: String { path + "/admin.creds" }
    /// Raft's write-ahead log and snapshots.
    public var raftPath: String { path + "/raft" }
    /// Present in the data directory of the controller that created the cluster: its empty Raft storage is
    /// bootstrapped as a one-member cluster. A joining controller starts empty and learns from the leader.
    public var founderMarkerPath: String { path + "/founder" }
    public var isFounder: Bool { FileManager.default.fileExists(atPath: founderMarkerPath) }

    /// Lifetime of certificates issued by `--init` for the controller itself. A controller holding the CA
    /// re-issues its own certificate at start once half of it is used.
    public static let controllerCertificateLifetime: Duration = .seconds(30 * 86_400)
    /// Lifetime of the admin credentials written by `--init`.
    public static let adminCertificateLifetime: Duration = .seconds(365 * 86_400)

    /// True when the directory already holds a cluster member.
    public var isInitialized: Bool {
        FileManager.default.fileExists(atPath: credentialsPath)
    }

    /// The result of `--init`.
    public struct Initialized: Sendable {
        public let clusterID: String
        public let controllerID: NodeID
        public let caPin: String
        public let adminCredentialsPath: String
    }

    /// Creates a new cluster: a CA, this controller's credentials and the admin credentials. Refuses a
    /// directory that already holds one, so an accidental `--init` never destroys a cluster.
    public func initialize(addresses: [String], now: Date) throws -> Initialized {
        guard !isInitialized else {
            throw ControllerError(
                .alreadyInitialized,
                "\(path) already holds a Flotilla controller; start without --init to serve it, or choose an empty --data-dir")
        }
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var rng = SystemRandomNumberGenerator()
        let clusterID = "flotilla-" + NodeID.random(using: &rng).rawValue.prefix(8)
        let controllerID = NodeID.random(using: &rng)
        let authority = try CertificateAuthority.create(clusterID: String(clusterID), now: now)
        try authority.write(to: caPath)
        let (dnsNames, ipAddresses) = Self.subjectAlternativeNames(addresses)
        let controller = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: controllerID, role: .controller),
            dnsNames: dnsNames, ipAddresses: ipAddresses, now: now,
            validity: Self.controllerCertificateLifetime)
        try controller.write(to: credentialsPath)
        let admin = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: NodeID("admin"), role: .admin),
            dnsNames: [], ipAddresses: [], now: now, validity: Self.adminCertificateLifetime)
        try admin.write(to: adminCredentialsPath)
        try Data("created by --init\n".utf8).write(to: URL(fileURLWithPath: founderMarkerPath))
        return Initialized(
            clusterID: String(clusterID), controllerID: controllerID, caPin: authority.pin,
            adminCredentialsPath: adminCredentialsPath)
    }

    /// Creates a new one-member cluster from a backup (`flotilla snapshot save`): the same CA (so existing
    /// credentials keep working), the same state, this controller as the only voter. Fresh admin
    /// credentials are written too. Refuses a directory that already holds a controller.
    public func restore(from backupPath: String, addresses: [String], now: Date) throws -> Initialized {
        guard !isInitialized else {
            throw ControllerError(
                .alreadyInitialized, "\(path) already holds a Flotilla controller; restore into an empty --data-dir")
        }
        let file = try SnapshotStore.decode(Array(try Data(contentsOf: URL(fileURLWithPath: backupPath))), path: backupPath)
        let backup: Flotilla_V1_BackupRecord
        do {
            backup = try Flotilla_V1_BackupRecord(serializedBytes: file.data)
        } catch {
            throw ControllerError(.invalidConfiguration, "\(backupPath) is not a Flotilla backup: \(error)")
        }
        let state = try ClusterState(snapshot: Array(backup.storeSnapshot))
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let authority = try CertificateAuthority(pemBundle: backup.caPem)
        try authority.write(to: caPath)
        var rng = SystemRandomNumberGenerator()
        let controllerID = NodeID.random(using: &rng)
        let (dnsNames, ipAddresses) = Self.subjectAlternativeNames(addresses)
        let controller = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: controllerID, role: .controller),
            dnsNames: dnsNames, ipAddresses: ipAddresses, now: now, validity: Self.controllerCertificateLifetime)
        let admin = try Credentials.issue(
            by: authority, identity: PeerIdentity(nodeID: NodeID("admin"), role: .admin),
            dnsNames: [], ipAddresses: [], now: now, validity: Self.adminCertificateLifetime)
        try admin.write(to: adminCredentialsPath)
        // Raft starts from the backup as its snapshot, with this controller as the only voter.
        let metadata = SnapshotMetadata(
            index: LogIndex(state.appliedIndex), term: 1, configuration: RaftConfiguration(voters: [controllerID]))
        try SnapshotStore(directory: raftPath + "/snap").save(Snapshot(metadata: metadata, data: Array(backup.storeSnapshot)))
        let (wal, _) = try WriteAheadLog.open(directory: raftPath + "/wal")
        try wal.append(entries: [], hardState: HardState(term: 1, votedFor: nil, commit: metadata.index))
        try wal.snapshotSaved(metadata)
        // The credentials last: their presence is what marks the directory initialized.
        try controller.write(to: credentialsPath)
        return Initialized(
            clusterID: authority.clusterID, controllerID: controllerID, caPin: authority.pin,
            adminCredentialsPath: adminCredentialsPath)
    }

    /// Prepares the data directory of a controller that joined with a token: stores the credentials the leader
    /// issued for the key generated here. The CA's key is not among them: it arrives through Raft. Refuses a
    /// directory that already holds a controller.
    public func adoptJoinCredentials(_ credentials: Credentials) throws {
        guard !isInitialized else {
            throw ControllerError(
                .alreadyInitialized,
                "\(path) already holds a Flotilla controller; start it without --join, or choose an empty --data-dir")
        }
        guard credentials.identity.role == .controller else {
            throw ControllerError(.invalidConfiguration, "the credentials are for \(credentials.identity), not a controller")
        }
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try credentials.write(to: credentialsPath)
    }

    /// Loads this controller's credentials, re-issuing them from the local CA when more than half of their
    /// lifetime has passed (automatic rotation for every node arrives with the membership work).
    public func loadCredentials(addresses: [String], now: Date) throws -> Credentials {
        guard isInitialized else {
            throw ControllerError(
                .notInitialized,
                "\(path) holds no Flotilla controller; pass --init to create a new cluster there")
        }
        let credentials = try Credentials.load(from: credentialsPath)
        let notBefore = credentials.certificate.notValidBefore
        let notAfter = credentials.certificate.notValidAfter
        let halfLife = notBefore.addingTimeInterval(notAfter.timeIntervalSince(notBefore) / 2)
        guard now >= halfLife, FileManager.default.fileExists(atPath: caPath) else { return credentials }
        let authority = try CertificateAuthority.load(from: caPath)
        let (dnsNames, ipAddresses) = Self.subjectAlternativeNames(addresses)
        let renewed = try Credentials.issue(
            by: authority, identity: credentials.identity, dnsNames: dnsNames, ipAddresses: ipAddresses,
            now: now, validity: Self.controllerCertificateLifetime)
        try renewed.write(to: credentialsPath)
        return renewed
    }

    /// Splits listen/advertise addresses into DNS names and IP literals for the certificate.
    static func subjectAlternativeNames(_ addresses: [String]) -> (dns: [String], ip: [String]) {
        var dns: Set<String> = ["localhost"]
        var ips: Set<String> = ["127.0.0.1", "::1"]
        for address in addresses {
            let host = HostPort.parse(address, allowingPortZero: true)?.host ?? address
            if host.isEmpty || host == "0.0.0.0" || host == "::" { continue }
            if host.allSatisfy({ $0.isHexDigit || $0 == "." || $0 == ":" }) && (host.contains(".") || host.contains(":")) {
                ips.insert(host)
            } else {
                dns.insert(host)
            }
        }
        return (dns.sorted(), ips.sorted())
    }
}

/// Errors at the controller's boundary, with a message that says what to do.
public struct ControllerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        let name: String
        public static let alreadyInitialized = Code(name: "alreadyInitialized")
        public static let notInitialized = Code(name: "notInitialized")
        public static let invalidConfiguration = Code(name: "invalidConfiguration")
    }
    public let code: Code
    public let message: String
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}
