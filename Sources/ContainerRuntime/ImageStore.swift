import Crypto
import Foundation

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

/// The node's images: blobs stored by digest (verified as they come in), and each image's layers unpacked once
/// into its own root file system. Images come from an OCI image layout directory here; registry pulls feed the
/// same store.
///
/// Layout under `root`: `blobs/sha256/<hex>` and `rootfs/<manifest hex>/`.
public struct ImageStore: Sendable {
    public let root: String

    public struct Failure: Error, CustomStringConvertible, Equatable {
        public let description: String
        init(_ description: String) { self.description = description }
    }

    public init(root: String) throws {
        self.root = root
        for directory in [root + "/blobs/sha256", root + "/rootfs"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
    }

    static let manifestTypes: Set<String> = [
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    ]

    /// Imports the image `reference` (a tag in the layout's index, or "" for its only image) from an OCI image
    /// layout directory: every blob checked against its digest and size, then the layers unpacked in order.
    public func importLayout(_ layout: String, reference: String = "") throws -> StoredImage {
        guard FileManager.default.fileExists(atPath: layout + "/oci-layout") else {
            throw Failure("\(layout) is not an OCI image layout (no oci-layout file)")
        }
        let index = try Self.json(Data(contentsOf: URL(fileURLWithPath: layout + "/index.json")), what: "\(layout)/index.json")
        let manifests = index["manifests"] as? [[String: Any]] ?? []
        let chosen = manifests.filter { manifest in
            let name = (manifest["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] ?? ""
            return reference.isEmpty || name == reference
        }
        guard chosen.count == 1, let descriptor = chosen.first else {
            let tags = manifests.compactMap { ($0["annotations"] as? [String: String])?["org.opencontainers.image.ref.name"] }
            throw Failure(reference.isEmpty
                ? "\(layout) holds \(manifests.count) images; name one of: \(tags.joined(separator: ", "))"
                : "\(layout) has no image tagged '\(reference)' (it has: \(tags.joined(separator: ", ")))")
        }
        let manifestDigest = try take(descriptor, from: layout)
        let manifest = try Self.json(try blob(manifestDigest), what: "manifest \(manifestDigest)")
        guard let type = manifest["mediaType"] as? String ?? descriptor["mediaType"] as? String, Self.manifestTypes.contains(type) else {
            throw Failure("manifest \(manifestDigest) is not an image manifest this node can run (an index or an unknown type)")
        }
        guard let configDescriptor = manifest["config"] as? [String: Any] else { throw Failure("manifest \(manifestDigest) has no config") }
        let configDigest = try take(configDescriptor, from: layout)
        let layers = try (manifest["layers"] as? [[String: Any]] ?? []).map { try take($0, from: layout) }
        let config = try Self.imageConfig(try blob(configDigest), digest: configDigest)

        let rootfs = root + "/rootfs/" + Self.hex(manifestDigest)
        if !FileManager.default.fileExists(atPath: rootfs) {
            // Unpack beside, then rename: a crash mid-way never leaves a half image under its name.
            let staging = rootfs + ".unpacking-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            do {
                for layer in layers { try LayerUnpacker.unpack(layer: blobPath(layer), into: staging) }
                try FileManager.default.moveItem(atPath: staging, toPath: rootfs)
            } catch {
                try? FileManager.default.removeItem(atPath: staging)
                throw error
            }
        }
        return StoredImage(digest: manifestDigest, rootfs: rootfs, config: config)
    }

    /// Copies the blob a descriptor names from the layout into the store, verifying size and digest; returns
    /// the digest. A blob already stored is not copied again.
    func take(_ descriptor: [String: Any], from layout: String) throws -> String {
        guard let digest = descriptor["digest"] as? String, digest.hasPrefix("sha256:"), Self.hex(digest).count == 64,
              Self.hex(digest).allSatisfy(\.isHexDigit) else {
            throw Failure("a descriptor has no valid sha256 digest: \(descriptor["digest"] ?? "none")")
        }
        let stored = blobPath(digest)
        if FileManager.default.fileExists(atPath: stored) { return digest }
        let source = layout + "/blobs/sha256/" + Self.hex(digest)
        guard FileManager.default.fileExists(atPath: source) else { throw Failure("blob \(digest) is missing from \(layout)") }
        let size = (try FileManager.default.attributesOfItem(atPath: source)[.size] as? Int) ?? -1
        if let expected = descriptor["size"] as? Int, expected != size {
            throw Failure("blob \(digest) is \(size) bytes, its descriptor says \(expected) (corrupt or tampered)")
        }
        let actual = try Self.sha256(of: source)
        guard actual == digest else { throw Failure("blob \(digest) does not match its digest (it hashes to \(actual)): corrupt or tampered") }
        let staging = stored + ".tmp-\(UUID().uuidString)"
        try FileManager.default.copyItem(atPath: source, toPath: staging)
        try FileManager.default.moveItem(atPath: staging, toPath: stored)
        return digest
    }

    func blobPath(_ digest: String) -> String { root + "/blobs/sha256/" + Self.hex(digest) }

    func blob(_ digest: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: blobPath(digest))) }

    static func hex(_ digest: String) -> String { String(digest.dropFirst("sha256:".count)) }

    /// The file's "sha256:<hex>", read in chunks.
    static func sha256(of path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw Failure("cannot read \(path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    static func json(_ data: Data, what: String) throws -> [String: Any] {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure("\(what) is not a JSON object")
        }
        return object
    }

    static func imageConfig(_ data: Data, digest: String) throws -> ImageConfig {
        let object = try json(data, what: "image config \(digest)")
        let config = object["config"] as? [String: Any] ?? [:]
        return ImageConfig(
            env: config["Env"] as? [String] ?? [], entrypoint: config["Entrypoint"] as? [String] ?? [],
            cmd: config["Cmd"] as? [String] ?? [], workingDir: config["WorkingDir"] as? String ?? "",
            user: config["User"] as? String ?? "")
    }
}

extension ImageStore {
    /// Imports the image an image reference names. Supported here: `oci:PATH[:TAG]` (an OCI image layout
    /// directory, as skopeo and umoci write them). Registry references are refused with what to do instead.
    public func importLayout(reference: String) throws -> StoredImage {
        guard reference.hasPrefix("oci:") else {
            throw Failure("image '\(reference)': pulling from registries is not available on this agent yet; "
                + "use an OCI image layout, --image oci:/path/to/layout:tag (skopeo copy docker://… oci:/path:tag makes one)")
        }
        let rest = String(reference.dropFirst("oci:".count))
        // The tag follows the last ':' after the last '/', unless the whole is a layout directory (a path may
        // itself hold ':').
        if !FileManager.default.fileExists(atPath: rest + "/oci-layout"), let colon = rest.lastIndex(of: ":"), !rest[colon...].contains("/") {
            return try importLayout(String(rest[..<colon]), reference: String(rest[rest.index(after: colon)...]))
        }
        return try importLayout(rest)
    }
}
