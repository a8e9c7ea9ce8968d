import Crypto
import Foundation
internal import NIOPosix
#if canImport(Glibc)
import Glibc
#endif

/// What an image says about running it (its config's `config` object), for the task's defaults.
public struct ImageConfig: Sendable, Equatable {
    public var env: [String] = []
    public var entrypoint: [String] = []
    public var cmd: [String] = []
    public var workingDir: String = ""
    public var user: String = ""
}

/// An image unpacked on this node.
public struct StoredImage: Sendable, Equatable {
    /// The manifest's digest ("sha256:…"): the image's identity.
    public let digest: String
    /// The root file system, unpacked once per image and shared read-only by its containers.
    public let rootfs: String
    public let config: ImageConfig
}

/// The node's images: blobs stored by digest (verified as they come in), each image's layers unpacked once into
/// its own root file system, and an index of the images stored (by reference) for listing and garbage
/// collection. Images come from registries, OCI image layout directories and OCI archive files
/// (`prepare(reference:)`; see `ImageReference`).
///
/// Layout under `root`: `blobs/sha256/<hex>`, `rootfs/<manifest hex>/`, `images.json` (the index, replaced
/// atomically), and `tmp/` (downloads and unpacking in progress; renamed into place when complete, so a crash
/// never leaves a partial blob or root file system under its final name).
///
/// Concurrency: several pulls may run at once, also of the same image (each writes its own temporary files; the
/// renames make the last one win with identical content). Garbage collection never removes what a pull in
/// progress uses. Use one `ImageStore` value (and its copies) per root within a process.
public struct ImageStore: Sendable {
    public let root: String
    /// How registries are reached (insecure hosts, credentials, extra CA, timeouts).
    public let registries: RegistryConfiguration
    let shared: SharedState

    /// Why an image could not be prepared, in words for the task's status.
    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public init(root: String, registries: RegistryConfiguration = RegistryConfiguration()) throws {
        self.root = root
        self.registries = registries
        for directory in [root + "/blobs/sha256", root + "/rootfs", root + "/tmp"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        shared = SharedState(indexPath: root + "/images.json")
    }

    /// The one entry point for the OCI driver: the image `reference` names, unpacked and ready to mount (see
    /// `ImageReference` for the forms). A registry image already stored under this reference is used as it is
    /// (pull if not present: use a new tag or a digest for a new image); layouts and archives are read each time
    /// (only blobs not yet stored are copied). Records the use for `list()` and `collectGarbage`.
    public func prepare(reference text: String) async throws -> StoredImage {
        let reference = try ImageReference(parsing: text)
        switch reference {
        case .layout(let path, let tag):
            return try await Self.blocking { try importLayout(path, reference: tag ?? "", recordAs: reference.description) }
        case .archive(let path, let tag):
            return try await Self.blocking { try importArchive(path, reference: tag ?? "", recordAs: reference.description) }
        case .registry(let registryReference):
            return try await pull(registryReference)
        }
    }

    /// Runs blocking file work (copying, hashing, unpacking) on NIO's blocking pool, not a concurrency thread.
    static func blocking<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await NIOThreadPool.singleton.runIfActive(work)
    }

    // MARK: - OCI image layouts and archives

    /// Imports the image `reference` (a tag in the layout's index, or "" for its only image) from an OCI image
    /// layout directory: every blob checked against its digest and size, then the layers unpacked in order.
    public func importLayout(_ layout: String, reference: String = "") throws -> StoredImage {
        try importLayout(layout, reference: reference, recordAs: "oci:" + layout + (reference.isEmpty ? "" : ":" + reference))
    }

    func importLayout(_ layout: String, reference: String, recordAs name: String) throws -> StoredImage {
        guard FileManager.default.fileExists(atPath: layout + "/oci-layout") else {
            throw Failure("\(layout) is not an OCI image layout (no oci-layout file)")
        }
        let indexData = try Data(contentsOf: URL(fileURLWithPath: layout + "/index.json"))
        guard let index = try? JSONDecoder().decode(ManifestDocument.self, from: indexData) else {
            throw Failure("\(layout)/index.json is not an OCI image index")
        }
        let manifests = index.manifests ?? []
        let chosen = manifests.filter { reference.isEmpty || $0.tag == reference }
        guard chosen.count == 1, let descriptor = chosen.first else {
            let tags = manifests.compactMap(\.tag).joined(separator: ", ")
            throw Failure(reference.isEmpty
                ? "\(layout) holds \(manifests.count) images; name one of: \(tags)"
                : "\(layout) has no image tagged '\(reference)' (it has: \(tags))")
        }
        let pins = shared.pins()
        defer { pins.release() }
        var manifestDescriptor = descriptor
        if let type = descriptor.mediaType, ImageManifest.indexTypes.contains(type) {
            // A multi-platform image (skopeo copy --all): its entry for this node's platform.
            let nested = try JSONDecoder().decode(ManifestDocument.self, from: try blob(try take(descriptor, from: layout, pins: pins)))
            manifestDescriptor = try choosePlatform(nested.manifests ?? [], of: name)
        }
        let manifestDigest = try take(manifestDescriptor, from: layout, pins: pins)
        let manifest = try ImageManifest(try blob(manifestDigest), digest: manifestDigest, mediaType: manifestDescriptor.mediaType)
        for blob in [manifest.config] + manifest.layers { _ = try take(blob, from: layout, pins: pins) }
        return try install(manifest, as: name)
    }

    /// Imports from an OCI archive (a tar of an OCI image layout, as `skopeo copy … oci-archive:FILE:TAG` writes):
    /// extracted into a temporary layout, imported from there, then removed.
    func importArchive(_ archive: String, reference: String, recordAs name: String) throws -> StoredImage {
        guard FileManager.default.fileExists(atPath: archive) else { throw Failure("OCI archive \(archive) does not exist") }
        let layout = temporaryPath("archive")
        try FileManager.default.createDirectory(atPath: layout, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: layout) }
        do {
            try LayerUnpacker.extract(archive: archive, into: layout)
        } catch {
            throw Failure("\(archive) is not a readable OCI archive: \(error)")
        }
        return try importLayout(layout, reference: reference, recordAs: name)
    }

    /// Copies the blob a descriptor names from the layout into the store, verifying size and digest; returns
    /// the digest. A blob already stored is not copied again.
    func take(_ descriptor: Descriptor, from layout: String, pins: PinSet) throws -> String {
        let digest = try descriptor.checkedDigest()
        pins.add([digest])
        let stored = blobPath(digest)
        if FileManager.default.fileExists(atPath: stored) { return digest }
        let source = layout + "/blobs/sha256/" + Self.hex(digest)
        guard FileManager.default.fileExists(atPath: source) else { throw Failure("blob \(digest) is missing from \(layout)") }
        let size = (try FileManager.default.attributesOfItem(atPath: source)[.size] as? Int64) ?? -1
        if let expected = descriptor.size, expected != size {
            throw Failure("blob \(digest) is \(size) bytes, its descriptor says \(expected) (corrupt or tampered)")
        }
        let actual = try Self.sha256(of: source)
        guard actual == digest else { throw Failure("blob \(digest) does not match its digest (it hashes to \(actual)): corrupt or tampered") }
        let staging = temporaryPath("blob")
        try FileManager.default.copyItem(atPath: source, toPath: staging)
        try moveIntoPlace(staging, stored)
        return digest
    }

    // MARK: - Unpacking and recording

    /// Unpacks an image whose blobs are all stored (once: an existing root file system is reused) and records it
    /// in the index under `name`.
    func install(_ manifest: ImageManifest, as name: String) throws -> StoredImage {
        let config = try Self.imageConfig(try blob(manifest.config.digest), digest: manifest.config.digest)
        let rootfs = rootfsPath(manifest.digest)
        if !FileManager.default.fileExists(atPath: rootfs) {
            // Unpack beside, then rename: a crash mid-way never leaves a half image under its name.
            let staging = temporaryPath("rootfs")
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            do {
                for layer in manifest.layers { try LayerUnpacker.unpack(layer: blobPath(layer.digest), into: staging) }
                if rename(staging, rootfs) != 0 {
                    // Another pull of the same image finished first: keep its copy.
                    guard FileManager.default.fileExists(atPath: rootfs) else {
                        throw Failure("cannot move the unpacked image into \(rootfs): \(String(cString: strerror(errno)))")
                    }
                    try? FileManager.default.removeItem(atPath: staging)
                }
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
        }
        try shared.record(name: name, manifest: manifest, unpackedSize: { Self.diskUsage(rootfs) })
        return StoredImage(digest: manifest.digest, rootfs: rootfs, config: config)
    }

    /// The image stored under `name` whose root file system is in place, marked used now; nil if there is none.
    func storedImage(named name: String) throws -> StoredImage? {
        guard let record = try shared.use(name: name, rootfsExists: { FileManager.default.fileExists(atPath: rootfsPath($0)) }) else {
            return nil
        }
        let config = try Self.imageConfig(try blob(record.config), digest: record.config)
        return StoredImage(digest: record.digest, rootfs: rootfsPath(record.digest), config: config)
    }

    // MARK: - Paths and helpers

    func blobPath(_ digest: String) -> String { root + "/blobs/sha256/" + Self.hex(digest) }

    func rootfsPath(_ digest: String) -> String { root + "/rootfs/" + Self.hex(digest) }

    /// A fresh name under `tmp/` (same file system as the store, so renames into place are atomic).
    func temporaryPath(_ kind: String) -> String { root + "/tmp/\(kind)-\(UUID().uuidString)" }

    func blob(_ digest: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: blobPath(digest))) }

    /// Renames a complete file into its final place (replacing an identical copy another pull put there).
    func moveIntoPlace(_ staging: String, _ destination: String) throws {
        guard rename(staging, destination) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: staging)
            throw Failure("cannot store \(destination): \(reason)")
        }
    }

    static func hex(_ digest: String) -> String { String(digest.dropFirst("sha256:".count)) }

    static func isDigest(_ text: String) -> Bool {
        text.hasPrefix("sha256:") && hex(text).count == 64 && hex(text).allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }

    static func digest(of data: Data) -> String { "sha256:" + SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined() }

    /// The file's "sha256:<hex>", read in chunks.
    static func sha256(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure("cannot read \(path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Bytes of the regular files under `path` (hard links counted once per name).
    static func diskUsage(_ path: String) -> Int64 {
        guard let walker = FileManager.default.enumerator(atPath: path) else { return 0 }
        var total: Int64 = 0
        var info = stat()
        while let name = walker.nextObject() as? String {
            if lstat(path + "/" + name, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG { total += Int64(info.st_size) }
        }
        return total
    }

    static func imageConfig(_ data: Data, digest: String) throws -> ImageConfig {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure("image config \(digest) is not a JSON object")
        }
        let config = object["config"] as? [String: Any] ?? [:]
        return ImageConfig(
            env: config["Env"] as? [String] ?? [], entrypoint: config["Entrypoint"] as? [String] ?? [],
            cmd: config["Cmd"] as? [String] ?? [], workingDir: config["WorkingDir"] as? String ?? "",
            user: config["User"] as? String ?? "")
    }
}

// MARK: - Manifests

/// A content descriptor (OCI image spec §4): what a blob is, its digest and size, and for an index entry its
/// platform and tag.
struct Descriptor: Codable, Sendable {
    struct Platform: Codable, Sendable {
        var os: String?
        var architecture: String?
        var variant: String?
    }

    var mediaType: String?
    var digest: String
    var size: Int64?
    var platform: Platform?
    var annotations: [String: String]?

    var tag: String? { annotations?["org.opencontainers.image.ref.name"] }

    func checkedDigest() throws -> String {
        guard ImageStore.isDigest(digest) else { throw ImageStore.Failure("a descriptor has no valid sha256 digest: \(digest)") }
        return digest
    }
}

/// An image manifest, an image index or a Docker manifest list: only the fields an image pull reads.
struct ManifestDocument: Codable, Sendable {
    var mediaType: String?
    var config: Descriptor?
    var layers: [Descriptor]?
    var manifests: [Descriptor]?
}

/// A checked image manifest: an image (not an index), a config, and layers this node can unpack.
struct ImageManifest: Sendable {
    static let imageTypes: Set<String> = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]
    static let indexTypes: Set<String> = [
        "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
    static let layerTypes: Set<String> = [
        "application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar",
    ]

    let digest: String
    let size: Int64
    let config: Descriptor
    let layers: [Descriptor]

    /// Every blob the image needs, the manifest first.
    var blobs: [String] { [digest, config.digest] + layers.map(\.digest) }
    /// Bytes of the image's blobs, as the registry or layout holds them.
    var blobBytes: Int64 { size + (config.size ?? 0) + layers.reduce(0) { $0 + ($1.size ?? 0) } }

    /// `mediaType`: from the response or descriptor, used when the document does not say (Docker v2 does).
    init(_ data: Data, digest: String, mediaType: String? = nil) throws {
        guard let document = try? JSONDecoder().decode(ManifestDocument.self, from: data) else {
            throw ImageStore.Failure("manifest \(digest) is not a JSON image manifest")
        }
        let type = document.mediaType ?? mediaType ?? (document.config != nil ? "application/vnd.oci.image.manifest.v1+json" : "")
        guard Self.imageTypes.contains(type), let config = document.config else {
            throw ImageStore.Failure("manifest \(digest) is not an image manifest this node can run (\(type.isEmpty ? "no media type" : type))")
        }
        _ = try config.checkedDigest()
        let layers = document.layers ?? []
        for layer in layers {
            _ = try layer.checkedDigest()
            if let type = layer.mediaType, !Self.layerTypes.contains(type) {
                throw ImageStore.Failure("layer \(layer.digest) is \(type); this node unpacks tar and gzip-compressed tar layers only")
            }
        }
        self.digest = digest
        self.size = Int64(data.count)
        self.config = config
        self.layers = layers
    }
}
