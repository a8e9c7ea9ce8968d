@testable import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Image references and registry challenges, parsed.
@Suite("Container runtime: image references")
struct ImageReferenceTests {
    @Test("registry references: host with '.', ':' or localhost; tag, digest, or latest")
    func registryReferences() throws {
        let digest = "sha256:" + String(repeating: "ab", count: 32)
        let cases: [(String, String, String, String?, String?)] = [
            ("127.0.0.1:5000/web:9", "127.0.0.1:5000", "web", "9", nil),
            ("registry.local/team/web", "registry.local", "team/web", "latest", nil),
            ("localhost/web:1.2-rc_1", "localhost", "web", "1.2-rc_1", nil),
            ("registry.local:443/web@\(digest)", "registry.local:443", "web", nil, digest),
            ("registry.local/web:1@\(digest)", "registry.local", "web", nil, digest),
        ]
        for (text, host, repository, tag, pinned) in cases {
            guard case .registry(let reference) = try ImageReference(parsing: text) else { Issue.record("\(text)"); continue }
            #expect(reference.host == host && reference.repository == repository, "\(text)")
            #expect(reference.tag == tag && reference.digest == pinned, "\(text)")
        }
        for (bad, says) in [("web:1.2", "no registry host"), ("library/nginx", "not a registry host"), ("r.local/Web", "repository name"),
                            ("r.local/web@sha256:12", "not a sha256 digest"), ("r.local/web:-x", "not a valid tag"), ("r.local//web", "repository name")] {
            let failure = #expect(throws: ImageStore.Failure.self) { try ImageReference(parsing: bad) }
            #expect(failure?.description.contains(says) == true, "\(bad): \(failure?.description ?? "")")
        }
    }

    @Test("layouts and archives: the tag follows the path, which may hold ':'")
    func localReferences() throws {
        let work = try TemporaryDirectory()
        try ImageStoreTests.makeLayout(work.path + "/lay:out")
        _ = FileManager.default.createFile(atPath: work.path + "/image.tar", contents: Data())
        #expect(try ImageReference(parsing: "oci:\(work.path)/lay:out:1.0") == .layout(path: work.path + "/lay:out", tag: "1.0"))
        #expect(try ImageReference(parsing: "oci:\(work.path)/lay:out") == .layout(path: work.path + "/lay:out", tag: nil))
        #expect(try ImageReference(parsing: "oci-archive:\(work.path)/image.tar:flt/app:1")
            == .archive(path: work.path + "/image.tar", tag: "flt/app:1"))
        #expect(try ImageReference(parsing: "oci-archive:\(work.path)/image.tar") == .archive(path: work.path + "/image.tar", tag: nil))
    }

    @Test("WWW-Authenticate challenges: scheme and quoted parameters")
    func challenges() {
        let bearer = RegistryChallenge(header: #"Bearer realm="https://auth.local/token",service="registry.local",scope="repository:a/b:pull,push""#)
        #expect(bearer == RegistryChallenge(scheme: "bearer", parameters: [
            "realm": "https://auth.local/token", "service": "registry.local", "scope": "repository:a/b:pull,push"]))
        #expect(RegistryChallenge(header: #"Basic realm="test""#)?.scheme == "basic")
        #expect(RegistryChallenge(header: "") == nil)
    }
}

/// Pulls from a real registry (Debian's docker-registry) on loopback, pushed to with skopeo, and from a small
/// token-auth registry in python3.
@Suite(
    "Container runtime: pulling images from a registry",
    .enabled(if: LocalRegistry.available, "needs docker-registry, skopeo and python3 (CI installs them)"))
struct RegistryPullTests {
    static func store(_ work: TemporaryDirectory, insecure: Set<String>, _ configure: (inout RegistryConfiguration) -> Void = { _ in }) throws -> ImageStore {
        var registries = RegistryConfiguration(insecureRegistries: insecure, connectTimeout: .seconds(2), requestTimeout: .seconds(10))
        configure(&registries)
        return try ImageStore(root: work.path + "/store-\(UUID().uuidString)", registries: registries)
    }

    static func contents(_ path: String) -> [String] { (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] }

    static func inode(_ path: String) -> UInt64? { (try? FileManager.default.attributesOfItem(atPath: path)[.systemFileNumber]) as? UInt64 }

    @Test("by tag and by digest: the layers unpacked, the digest recorded; a second tag of the same image reuses its blobs; concurrent pulls agree")
    func pulls() async throws {
        let work = try TemporaryDirectory()
        let digest = try ImageStoreTests.makeLayout(work.path + "/layout")
        try await LocalRegistry.with { registry in
            try registry.push(layout: work.path + "/layout", as: "flt/app:1")
            try registry.push(layout: work.path + "/layout", as: "flt/app:1.1")
            let store = try Self.store(work, insecure: [registry.host])
            let image = try await store.prepare(reference: "\(registry.host)/flt/app:1")
            #expect(image.digest == digest)
            #expect(try String(contentsOfFile: image.rootfs + "/bin/app", encoding: .utf8) == "v1")
            #expect(try String(contentsOfFile: image.rootfs + "/etc/new", encoding: .utf8) == "fresh")
            #expect(!FileManager.default.fileExists(atPath: image.rootfs + "/etc/old"), "the whiteout applied")
            #expect(image.config.entrypoint == ["/bin/app"])
            let listed = try #require(store.list().first)
            #expect(listed.reference == "\(registry.host)/flt/app:1" && listed.digest == digest && listed.size > 0 && listed.unpackedSize == 7)

            // Another tag of the same image: the manifest comes again, the blobs do not (same files, same inodes).
            let blobs = Self.contents(store.root + "/blobs/sha256").sorted()
            let inodes = blobs.map { Self.inode(store.root + "/blobs/sha256/" + $0) }
            #expect(try await store.prepare(reference: "\(registry.host)/flt/app:1.1") == image)
            #expect(Self.contents(store.root + "/blobs/sha256").sorted() == blobs)
            #expect(blobs.map { Self.inode(store.root + "/blobs/sha256/" + $0) } == inodes, "blobs reused, not downloaded again")

            // By digest, into a fresh store, three pulls at once.
            let fresh = try Self.store(work, insecure: [registry.host])
            async let first = fresh.prepare(reference: "\(registry.host)/flt/app@\(digest)")
            async let second = fresh.prepare(reference: "\(registry.host)/flt/app@\(digest)")
            async let third = fresh.prepare(reference: "\(registry.host)/flt/app:1")
            let pulled = try await [first, second, third]
            #expect(pulled.allSatisfy { $0.digest == digest && $0.rootfs == pulled[0].rootfs })
            #expect(try String(contentsOfFile: pulled[0].rootfs + "/bin/app", encoding: .utf8) == "v1")
            #expect(Self.contents(fresh.root + "/tmp").isEmpty, "no temporary file left behind")
            #expect(Self.contents(fresh.root + "/rootfs").count == 1)
        }
    }

    @Test("an unknown tag, a registry that is down, HTTPS to a plain-HTTP registry, a corrupt layer and a tampered manifest fail in words, leaving nothing behind")
    func failures() async throws {
        let work = try TemporaryDirectory()
        let digest = try ImageStoreTests.makeLayout(work.path + "/layout")
        try await LocalRegistry.with { registry in
            try registry.push(layout: work.path + "/layout", as: "flt/app:1")
            let store = try Self.store(work, insecure: [registry.host])

            let unknown = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app:9") }
            #expect(unknown?.description == "image \(registry.host)/flt/app:9 not found in the registry (manifest unknown)")

            let down = try #require(ProcessDriver.freePort())
            let refused = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: ["127.0.0.1:\(down)"]).prepare(reference: "127.0.0.1:\(down)/flt/app:1")
            }
            #expect(refused?.description == "registry 127.0.0.1:\(down) is unreachable: connection refused")

            let https = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: []).prepare(reference: "\(registry.host)/flt/app:1")
            }
            #expect(https?.description.contains("TLS with registry \(registry.host) failed") == true, "\(https?.description ?? "")")
            #expect(https?.description.contains("--insecure-registry \(registry.host)") == true, "\(https?.description ?? "")")

            // A layer changed in the registry's storage (same size): refused, nothing stored under its digest.
            let manifest = try JSONDecoder().decode(ManifestDocument.self, from: Data(contentsOf: URL(fileURLWithPath: registry.blobData(digest))))
            let layer = try #require(manifest.layers?.last?.digest)
            let original = try Data(contentsOf: URL(fileURLWithPath: registry.blobData(layer)))
            var bytes = [UInt8](original)
            bytes[bytes.count / 2] ^= 0xFF
            try Data(bytes).write(to: URL(fileURLWithPath: registry.blobData(layer)))
            let corrupt = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app:1") }
            #expect(corrupt?.description.hasPrefix("layer \(layer) of \(registry.host)/flt/app:1 does not match its digest (it hashes to sha256:") == true)
            #expect(corrupt?.description.hasSuffix("): corrupt or tampered") == true, "\(corrupt?.description ?? "")")
            #expect(!FileManager.default.fileExists(atPath: store.blobPath(layer)))
            #expect(Self.contents(store.root + "/rootfs").isEmpty && Self.contents(store.root + "/tmp").isEmpty)
            #expect(store.list().isEmpty)
            try original.write(to: URL(fileURLWithPath: registry.blobData(layer)))

            // The manifest changed in storage (the same JSON value, other bytes): by digest and by tag, refused.
            let manifestData = try String(contentsOfFile: registry.blobData(digest), encoding: .utf8)
            try manifestData.replacingOccurrences(of: "\"schemaVersion\": 2", with: "\"schemaVersion\":2")
                .write(toFile: registry.blobData(digest), atomically: false, encoding: .utf8)
            let byDigest = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app@\(digest)") }
            #expect(byDigest?.description.hasPrefix("the manifest of \(registry.host)/flt/app@\(digest) does not match its digest") == true)
            let byTag = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app:1") }
            #expect(byTag?.description.contains("does not match the digest the registry gives") == true, "\(byTag?.description ?? "")")
            #expect(Self.contents(store.root + "/rootfs").isEmpty && store.list().isEmpty)
        }
    }

    @Test("basic auth over HTTPS with an extra CA: the right credentials pull; none, wrong ones or an untrusted certificate fail in words",
          .enabled(if: LocalRegistry.authAvailable, "needs htpasswd (apache2-utils) and openssl"))
    func basicAuthOverTLS() async throws {
        let work = try TemporaryDirectory()
        let digest = try ImageStoreTests.makeLayout(work.path + "/layout")
        let account = RegistryCredentials(username: "flotilla", password: "s3cret")
        try await LocalRegistry.with(credentials: account, tls: true) { registry in
            try registry.push(layout: work.path + "/layout", as: "flt/app:1")
            let reference = "\(registry.host)/flt/app:1"
            let trusted = try Self.store(work, insecure: []) { $0.additionalCAFile = registry.caFile; $0.credentials = [registry.host: account] }
            #expect(try await trusted.prepare(reference: reference).digest == digest)

            let anonymous = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: []) { $0.additionalCAFile = registry.caFile }.prepare(reference: reference)
            }
            #expect(anonymous?.description == "registry \(registry.host) asks for a username and password (basic auth), and none are configured for it")
            let wrong = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: []) {
                    $0.additionalCAFile = registry.caFile
                    $0.credentials = [registry.host: RegistryCredentials(username: "flotilla", password: "guess")]
                }.prepare(reference: reference)
            }
            #expect(wrong?.description.hasPrefix("registry \(registry.host) refused the credentials for \(reference)") == true)
            #expect(wrong?.description.hasSuffix("wrong username or password?") == true, "\(wrong?.description ?? "")")
            let untrusted = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: []) { $0.credentials = [registry.host: account] }.prepare(reference: reference)
            }
            #expect(untrusted?.description.contains("CA this node trusts") == true, "\(untrusted?.description ?? "")")
        }
    }

    @Test("the bearer-token flow: a 401 challenge, a token from the realm for the scope, the request again; an index resolved to linux/amd64")
    func bearerToken() async throws {
        let work = try TemporaryDirectory()
        let digest = try ImageStoreTests.makeLayout(work.path + "/layout")
        try await TokenRegistry.with(layout: work.path + "/layout") { registry in
            let store = try Self.store(work, insecure: [registry.host]) { $0.architecture = "amd64" }
            #expect(try await store.prepare(reference: "\(registry.host)/flt/app:1.0").digest == digest)
            let multi = try await store.prepare(reference: "\(registry.host)/flt/app:multi")
            #expect(multi.digest == digest, "the amd64 entry of the index")
            let riscv = try Self.store(work, insecure: [registry.host]) { $0.architecture = "riscv64" }
            let none = await #expect(throws: ImageStore.Failure.self) { try await riscv.prepare(reference: "\(registry.host)/flt/app:multi") }
            #expect(none?.description == "image \(registry.host)/flt/app:multi has no linux/riscv64 variant (it has: linux/arm64, linux/amd64)")
            let unknown = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app:2.0") }
            #expect(unknown?.description == "image \(registry.host)/flt/app:2.0 not found in the registry (manifest unknown)")
        }
        // A token service that wants credentials: refused without them, served with them.
        try await TokenRegistry.with(layout: work.path + "/layout", password: "pw") { registry in
            let anonymous = await #expect(throws: ImageStore.Failure.self) {
                try await Self.store(work, insecure: [registry.host]).prepare(reference: "\(registry.host)/flt/app:1.0")
            }
            #expect(anonymous?.description.contains("refused a token for \(registry.host)/flt/app:1.0 (HTTP 401); no credentials are configured") == true,
                    "\(anonymous?.description ?? "")")
            let store = try Self.store(work, insecure: [registry.host]) { $0.credentials = [registry.host: RegistryCredentials(username: "user", password: "pw")] }
            #expect(try await store.prepare(reference: "\(registry.host)/flt/app:1.0").digest == digest)
        }
        // A registry that serves a manifest with a byte added, pulled by digest: refused.
        try await TokenRegistry.with(layout: work.path + "/layout", tamper: true) { registry in
            let store = try Self.store(work, insecure: [registry.host])
            let tampered = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "\(registry.host)/flt/app@\(digest)") }
            #expect(tampered?.description.contains("does not match its digest") == true && tampered?.description.hasSuffix("corrupt or tampered") == true)
            #expect(Self.contents(store.root + "/blobs/sha256").isEmpty)
        }
    }
}
