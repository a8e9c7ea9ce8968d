import Foundation

extension ImageStore {
    /// Pulls an image from its registry unless it is stored under this reference already: the manifest (its
    /// digest checked when the reference pins one, and always recorded; for a multi-platform image, the one for
    /// linux and this machine's architecture), then every blob not yet stored, each checked against its size
    /// and sha256 as it streams to a temporary file and renamed into place only when it matches; then the layers
    /// are unpacked as for any image.
    func pull(_ reference: RegistryReference) async throws -> StoredImage {
        let name = reference.description
        if let image = try storedImage(named: name) { return image }
        let pins = shared.pins()
        defer { pins.release() }
        let manifest = try await RegistryClient.with(registries, reference) { client in
            var (data, type, digest) = try await client.manifest(tag: reference.tag, digest: reference.digest)
            if let kind = try? JSONDecoder().decode(ManifestDocument.self, from: data), ImageManifest.indexTypes.contains(kind.mediaType ?? type ?? "") {
                let chosen = try choosePlatform(kind.manifests ?? [], of: name)
                (data, type, digest) = try await client.manifest(digest: chosen.digest)
                type = type ?? chosen.mediaType
            }
            let manifest = try ImageManifest(data, digest: digest, mediaType: type)
            pins.add(manifest.blobs)
            try storeBlob(data, digest: digest)
            for (index, blob) in ([manifest.config] + manifest.layers).enumerated() where !FileManager.default.fileExists(atPath: blobPath(blob.digest)) {
                let staging = temporaryPath("download")
                try await client.download(blob, what: index == 0 ? "config" : "layer", to: staging)
                try moveIntoPlace(staging, blobPath(blob.digest))
            }
            return manifest
        }
        return try await Self.blocking { try install(manifest, as: name) }
    }

    /// The manifest for linux and this machine's architecture in an image index or manifest list.
    func choosePlatform(_ manifests: [Descriptor], of reference: String) throws -> Descriptor {
        let wanted = registries.architecture
        if let match = manifests.first(where: { $0.platform?.os == "linux" && $0.platform?.architecture == wanted }) {
            return match
        }
        let offered = manifests.compactMap { $0.platform.map { "\($0.os ?? "?")/\($0.architecture ?? "?")" } }
        throw Failure("image \(reference) has no linux/\(wanted) variant (it has: \(offered.isEmpty ? "none" : offered.joined(separator: ", ")))")
    }

    /// Stores bytes already checked against `digest`.
    func storeBlob(_ data: Data, digest: String) throws {
        guard !FileManager.default.fileExists(atPath: blobPath(digest)) else { return }
        let staging = temporaryPath("blob")
        try data.write(to: URL(fileURLWithPath: staging))
        try moveIntoPlace(staging, blobPath(digest))
    }
}
