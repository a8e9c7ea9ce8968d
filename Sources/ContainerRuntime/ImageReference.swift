import Foundation

/// Where an image comes from, parsed from a service's `--image`:
///
/// - `oci:PATH[:TAG]`: an OCI image layout directory (as skopeo and umoci write them);
/// - `oci-archive:PATH[:TAG]`: a tar file of such a layout (`skopeo copy … oci-archive:FILE:TAG`);
/// - `HOST[:PORT]/NAME[:TAG]` or `HOST[:PORT]/NAME@sha256:HEX`: an image in a registry (OCI Distribution API).
///
/// Registry references follow Docker's grammar, except that the registry host is never implied: the first
/// component names a registry when it holds a '.' or a ':' or is `localhost`; anything else ("web:1.2",
/// "library/nginx") is refused with what to write instead, since there is no Docker Hub to fall back on.
public enum ImageReference: Sendable, Hashable, CustomStringConvertible {
    case layout(path: String, tag: String?)
    case archive(path: String, tag: String?)
    case registry(RegistryReference)

    public init(parsing text: String) throws(ImageStore.Failure) {
        if text.hasPrefix("oci:") {
            let (path, tag) = Self.pathAndTag(String(text.dropFirst("oci:".count))) { FileManager.default.fileExists(atPath: $0 + "/oci-layout") }
            self = .layout(path: path, tag: tag)
        } else if text.hasPrefix("oci-archive:") {
            let (path, tag) = Self.pathAndTag(String(text.dropFirst("oci-archive:".count))) { path in
                var isDirectory: ObjCBool = false
                return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
            }
            self = .archive(path: path, tag: tag)
        } else {
            self = .registry(try RegistryReference(parsing: text))
        }
    }

    /// Splits `PATH[:TAG]`: the path is the shortest prefix before a ':' that names what `exists` looks for (a
    /// path may hold ':', and a tag may hold ':' and '/', as in `oci-archive:app.tar:team/app:1`); when none
    /// does, the tag follows the last ':' after the last '/' (and the import then says the path is missing).
    static func pathAndTag(_ text: String, exists: (String) -> Bool) -> (String, String?) {
        func split(at colon: String.Index) -> (String, String?) {
            let tag = String(text[text.index(after: colon)...])
            return (String(text[..<colon]), tag.isEmpty ? nil : tag)
        }
        if exists(text) { return (text, nil) }
        if let colon = text.indices.first(where: { text[$0] == ":" && exists(String(text[..<$0])) }) { return split(at: colon) }
        if let colon = text.lastIndex(of: ":"), !text[colon...].contains("/") { return split(at: colon) }
        return (text, nil)
    }

    public var description: String {
        switch self {
        case .layout(let path, let tag): "oci:" + path + (tag.map { ":" + $0 } ?? "")
        case .archive(let path, let tag): "oci-archive:" + path + (tag.map { ":" + $0 } ?? "")
        case .registry(let reference): reference.description
        }
    }
}

/// An image in a registry: `HOST[:PORT]/REPOSITORY` and a tag or a manifest digest.
public struct RegistryReference: Sendable, Hashable, CustomStringConvertible {
    /// The registry's host and optional port, as written ("registry.local", "127.0.0.1:5000").
    public var host: String
    /// The repository within the registry ("web", "team/web").
    public var repository: String
    /// The tag ("latest" when the reference names neither a tag nor a digest); nil when pulled by digest.
    public var tag: String?
    /// The manifest digest ("sha256:…") when the reference pins one.
    public var digest: String?

    public init(parsing text: String) throws(ImageStore.Failure) {
        let example = "write HOST[:PORT]/NAME[:TAG], e.g. registry.local:5000/web:1.2 (or oci:/path/to/layout:TAG)"
        guard let slash = text.firstIndex(of: "/") else {
            throw ImageStore.Failure("image '\(text)' names no registry host, and this node has no default registry; \(example)")
        }
        let host = String(text[..<slash])
        guard host.contains(".") || host.contains(":") || host == "localhost" else {
            throw ImageStore.Failure("image '\(text)': '\(host)' is not a registry host (no '.' or ':' and not localhost), "
                + "and this node has no default registry; \(example)")
        }
        var rest = Substring(text[text.index(after: slash)...])
        if let at = rest.firstIndex(of: "@") {
            let digest = String(rest[rest.index(after: at)...])
            guard ImageStore.isDigest(digest) else {
                throw ImageStore.Failure("image '\(text)': '\(digest)' is not a sha256 digest (sha256: and 64 hex digits)")
            }
            self.digest = digest
            rest = rest[..<at]
        }
        if let colon = rest.lastIndex(of: ":") {
            let tag = String(rest[rest.index(after: colon)...])
            guard let first = tag.first, first.isLetter || first.isNumber || first == "_", tag.count <= 128,
                  tag.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }) else {
                throw ImageStore.Failure("image '\(text)': '\(tag)' is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
            }
            if digest == nil { self.tag = tag }
            rest = rest[..<colon]
        }
        let components = rest.split(separator: "/", omittingEmptySubsequences: false)
        let valid = components.allSatisfy { component in
            guard let first = component.first, first.isASCII, first.isLowercase || first.isNumber else { return false }
            return component.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || "._-".contains($0)) }
        }
        guard valid else {
            throw ImageStore.Failure("image '\(text)': '\(rest)' is not a valid repository name (lowercase letters, digits, '.', '_', '-', separated by '/')")
        }
        self.host = host
        self.repository = String(rest)
        if digest == nil && tag == nil { tag = "latest" }
    }

    public var description: String {
        host + "/" + repository + (digest.map { "@" + $0 } ?? ":" + (tag ?? "latest"))
    }
}
