internal import AsyncHTTPClient
import Crypto
import Foundation
internal import NIOCore
internal import NIOHTTP1
internal import NIOPosix
internal import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// How this node reaches image registries. Every registry speaks HTTPS, verified against the system's trust
/// store (plus `additionalCAFile`), except those in `insecureRegistries`, which speak plain HTTP.
public struct RegistryConfiguration: Sendable {
    /// Registries reached over plain HTTP, as `HOST:PORT` (or `HOST`) exactly as image references write them
    /// (the agent's `--insecure-registry`).
    public var insecureRegistries: Set<String>
    /// Username and password per registry (`HOST[:PORT]` as references write it), for basic auth and for the
    /// token service of registries that use bearer tokens. Anonymous access where none are given.
    public var credentials: [String: RegistryCredentials]
    /// A PEM file of CA certificates trusted beside the system's (a private registry's CA; tests).
    public var additionalCAFile: String?
    /// Longest wait for a TCP (and TLS) connection. Default 10 s.
    public var connectTimeout: Duration
    /// Longest wait for a response to start, for every request (manifests, tokens, blobs). Default 30 s.
    public var requestTimeout: Duration
    /// Longest silence while a response body streams (a blob may take long, but must keep moving). Default 30 s.
    public var readTimeout: Duration
    /// The largest manifest accepted, in bytes. Default 4 MiB.
    public var maximumManifestBytes: Int
    /// The platform picked from a multi-platform image: `linux` and this machine's architecture by default.
    public var architecture: String

    public init(
        insecureRegistries: Set<String> = [], credentials: [String: RegistryCredentials] = [:], additionalCAFile: String? = nil,
        connectTimeout: Duration = .seconds(10), requestTimeout: Duration = .seconds(30), readTimeout: Duration = .seconds(30),
        maximumManifestBytes: Int = 4 << 20, architecture: String = RegistryConfiguration.hostArchitecture
    ) {
        self.insecureRegistries = insecureRegistries
        self.credentials = credentials
        self.additionalCAFile = additionalCAFile
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.readTimeout = readTimeout
        self.maximumManifestBytes = maximumManifestBytes
        self.architecture = architecture
    }

    /// This machine's architecture in OCI's words (amd64, arm64, …).
    public static let hostArchitecture: String = {
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return ["x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"][machine] ?? machine
    }()
}

/// A registry account.
public struct RegistryCredentials: Sendable, Equatable {
    public var username: String
    public var password: String

    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }

    var basicAuthorization: String { "Basic " + Data("\(username):\(password)".utf8).base64EncodedString() }
}

/// A `WWW-Authenticate` challenge: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
struct RegistryChallenge: Equatable {
    var scheme: String
    var parameters: [String: String]

    init(scheme: String, parameters: [String: String]) {
        self.scheme = scheme
        self.parameters = parameters
    }

    /// Parses the first challenge of the header; nil when it has no scheme.
    init?(header: String) {
        let text = header.trimmingCharacters(in: .whitespaces)
        guard let space = text.firstIndex(of: " ") ?? (text.isEmpty ? nil : text.endIndex) else { return nil }
        scheme = text[..<space].lowercased()
        parameters = [:]
        var rest = text[space...].drop { $0 == " " }
        while let equals = rest.firstIndex(of: "=") {
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let character = rest.first, character != "\"" {
                    if character == "\\" { rest = rest.dropFirst() }
                    if let next = rest.first { value.append(next) }
                    rest = rest.dropFirst()
                }
                rest = rest.dropFirst()
            } else {
                value = String(rest.prefix { $0 != "," })
                rest = rest.dropFirst(value.count)
            }
            parameters[key] = value
            rest = rest.drop { $0 == "," || $0 == " " }
        }
    }
}

/// One registry conversation for one repository (OCI Distribution Spec: `GET /v2/<name>/manifests/<reference>`
/// and `/blobs/<digest>`), with the authorization it earned: anonymous first; on a 401, basic credentials or a
/// bearer token from the challenge's realm, then the request once more.
struct RegistryClient {
    let http: HTTPClient
    let configuration: RegistryConfiguration
    let reference: RegistryReference
    /// The `Authorization` header value earned so far.
    private var authorization: String?

    static let manifestTypes = ImageManifest.imageTypes.union(ImageManifest.indexTypes)

    init(http: HTTPClient, configuration: RegistryConfiguration, reference: RegistryReference) {
        self.http = http
        self.configuration = configuration
        self.reference = reference
    }

    /// Runs `body` with a client for `reference`'s registry, closed afterwards whatever happens.
    static func with<Value: Sendable>(
        _ configuration: RegistryConfiguration, _ reference: RegistryReference, _ body: (inout RegistryClient) async throws -> Value
    ) async throws -> Value {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let file = configuration.additionalCAFile { tls.additionalTrustRoots = [.file(file)] }
        let http = HTTPClient(
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            configuration: HTTPClient.Configuration(
                tlsConfiguration: tls, redirectConfiguration: .follow(max: 5, allowCycles: false),
                timeout: .init(connect: timeAmount(configuration.connectTimeout), read: timeAmount(configuration.readTimeout))))
        var client = RegistryClient(http: http, configuration: configuration, reference: reference)
        do {
            let value = try await body(&client)
            try? await http.shutdown()
            return value
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    var registry: String { reference.host }
    var scheme: String { configuration.insecureRegistries.contains(registry) ? "http" : "https" }
    var repositoryURL: String { "\(scheme)://\(registry)/v2/\(reference.repository)" }

    // MARK: - Manifests and blobs

    /// The manifest a tag or a digest names: its bytes (at most `maximumManifestBytes`), media type and digest
    /// (the sha256 of the bytes, which must be the digest asked for, and the registry's `Docker-Content-Digest`).
    mutating func manifest(tag: String? = nil, digest expected: String? = nil) async throws -> (data: Data, mediaType: String?, digest: String) {
        let response = try await get(repositoryURL + "/manifests/" + (expected ?? tag ?? "latest"), accept: Self.manifestTypes.sorted(), what: "the manifest")
        guard response.status == .ok else {
            throw await failure(response, what: "manifest", notFound: "image \(reference) not found in the registry")
        }
        let body: ByteBuffer
        do {
            body = try await response.body.collect(upTo: configuration.maximumManifestBytes)
        } catch is NIOTooManyBytesError {
            throw ImageStore.Failure("the manifest of \(reference) is larger than \(configuration.maximumManifestBytes) bytes; refused")
        } catch {
            throw explain(error)
        }
        let data = Data(body.readableBytesView)
        let digest = ImageStore.digest(of: data)
        if let expected, digest != expected {
            let what = expected == reference.digest ? "the manifest of \(reference)" : "the manifest \(expected) of \(reference)"
            throw ImageStore.Failure("\(what) does not match its digest (it hashes to \(digest)): corrupt or tampered")
        }
        if let claimed = response.headers.first(name: "Docker-Content-Digest"), claimed.hasPrefix("sha256:"), claimed != digest {
            throw ImageStore.Failure("the manifest of \(reference) does not match the digest the registry gives (\(claimed); it hashes to \(digest)): corrupt or tampered")
        }
        let type = response.headers.first(name: "Content-Type").map { String($0.prefix { $0 != ";" }) }
        return (data, type, digest)
    }

    /// Streams the blob `descriptor` names into `path`, hashing and counting as it comes; throws (leaving `path`
    /// removed) unless its size and sha256 match the descriptor. `what` names it in errors ("layer", "config").
    mutating func download(_ descriptor: Descriptor, what: String, to path: String) async throws {
        let response = try await get(repositoryURL + "/blobs/" + descriptor.digest, accept: [], what: "\(what) \(descriptor.digest)")
        guard response.status == .ok else {
            throw await failure(response, what: "\(what) \(descriptor.digest)", notFound: "\(what) \(descriptor.digest) of \(reference) is missing from the registry")
        }
        guard FileManager.default.createFile(atPath: path, contents: nil), let output = FileHandle(forWritingAtPath: path) else {
            throw ImageStore.Failure("cannot create \(path)")
        }
        var hasher = SHA256()
        var received: Int64 = 0
        do {
            defer { try? output.close() }
            for try await chunk in response.body {
                received += Int64(chunk.readableBytes)
                if let size = descriptor.size, received > size {
                    throw ImageStore.Failure("\(what) \(descriptor.digest) of \(reference) is larger than its descriptor says (\(size) bytes): corrupt or tampered")
                }
                chunk.withUnsafeReadableBytes { bytes in
                    hasher.update(bufferPointer: bytes)
                    output.write(Data(bytes))
                }
            }
            try output.synchronize()
            let actual = "sha256:" + hasher.finalize().map { String(format: "%02x", $0) }.joined()
            if let size = descriptor.size, received != size {
                throw ImageStore.Failure("\(what) \(descriptor.digest) of \(reference) is \(received) bytes, its descriptor says \(size): corrupt or truncated")
            }
            guard actual == descriptor.digest else {
                throw ImageStore.Failure("\(what) \(descriptor.digest) of \(reference) does not match its digest (it hashes to \(actual)): corrupt or tampered")
            }
        } catch {
            try? FileManager.default.removeItem(atPath: path)
            throw explain(error)
        }
    }

    // MARK: - Requests and authorization

    /// A GET with the authorization earned so far; on a 401, authenticates as the challenge asks and tries once more.
    private mutating func get(_ url: String, accept: [String], what: String) async throws -> HTTPClientResponse {
        var retried = false
        while true {
            var request = HTTPClientRequest(url: url)
            if !accept.isEmpty { request.headers.add(name: "Accept", value: accept.joined(separator: ", ")) }
            if let authorization { request.headers.add(name: "Authorization", value: authorization) }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: Self.timeAmount(configuration.requestTimeout))
            } catch {
                throw explain(error)
            }
            guard response.status == .unauthorized, !retried else { return response }
            retried = true
            let header = response.headers.first(name: "WWW-Authenticate") ?? ""
            guard let challenge = RegistryChallenge(header: header) else {
                throw ImageStore.Failure("registry \(registry) refused \(what) of \(reference) (HTTP 401) without saying how to authenticate")
            }
            try await authenticate(challenge)
        }
    }

    private mutating func authenticate(_ challenge: RegistryChallenge) async throws {
        let credentials = configuration.credentials[registry]
        switch challenge.scheme {
        case "basic":
            guard let credentials else {
                throw ImageStore.Failure("registry \(registry) asks for a username and password (basic auth), and none are configured for it")
            }
            authorization = credentials.basicAuthorization
        case "bearer":
            guard let realm = challenge.parameters["realm"], var components = URLComponents(string: realm), components.host != nil else {
                throw ImageStore.Failure("registry \(registry) asks for a bearer token without a usable realm")
            }
            var query = components.queryItems ?? []
            if let service = challenge.parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            query.append(URLQueryItem(name: "scope", value: challenge.parameters["scope"] ?? "repository:\(reference.repository):pull"))
            components.queryItems = query
            var request = HTTPClientRequest(url: components.string ?? realm)
            if let credentials { request.headers.add(name: "Authorization", value: credentials.basicAuthorization) }
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, timeout: Self.timeAmount(configuration.requestTimeout))
            } catch {
                throw explain(error, at: components.host ?? realm)
            }
            guard response.status == .ok else {
                let detail = credentials == nil ? "no credentials are configured for \(registry)" : "wrong username or password?"
                throw ImageStore.Failure("the token service of registry \(registry) refused a token for \(reference) (HTTP \(response.status.code)); \(detail)")
            }
            let body = try await response.body.collect(upTo: 1 << 20)
            let object = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            guard let token = object?["token"] as? String ?? object?["access_token"] as? String, !token.isEmpty else {
                throw ImageStore.Failure("the token service of registry \(registry) answered without a token")
            }
            authorization = "Bearer " + token
        default:
            throw ImageStore.Failure("registry \(registry) asks for '\(challenge.scheme)' authentication, which this node does not speak")
        }
    }

    /// A person's words for an error status: the registry's own error codes and messages where it gives them.
    private func failure(_ response: HTTPClientResponse, what: String, notFound: String) async -> ImageStore.Failure {
        let body = (try? await response.body.collect(upTo: 64 << 10)).map { Data($0.readableBytesView) } ?? Data()
        let errors = ((try? JSONSerialization.jsonObject(with: body) as? [String: Any])?["errors"] as? [[String: Any]]) ?? []
        let said = errors.compactMap { $0["message"] as? String ?? $0["code"] as? String }.joined(separator: "; ")
        let detail = said.isEmpty ? "HTTP \(response.status.code)" : said
        switch response.status {
        case .notFound:
            return ImageStore.Failure("\(notFound) (\(detail))")
        case .unauthorized:
            let hint = configuration.credentials[registry] == nil ? "no credentials are configured for it" : "wrong username or password?"
            return ImageStore.Failure("registry \(registry) refused the credentials for \(reference) (\(detail)); \(hint)")
        case .forbidden:
            return ImageStore.Failure("registry \(registry) denies access to \(reference) (\(detail))")
        default:
            return ImageStore.Failure("registry \(registry) failed to send the \(what) of \(reference): HTTP \(response.status.code) (\(said.isEmpty ? response.status.reasonPhrase : said))")
        }
    }

    /// A person's words for a transport error: unreachable, TLS trouble (with the likely fix), timeouts.
    func explain(_ error: any Error, at host: String? = nil) -> any Error {
        if error is ImageStore.Failure { return error }
        let host = host ?? registry
        let text = "\(error)"
        if let connection = error as? NIOConnectionError {
            let reasons = connection.connectionErrors.map { "\($0.error)" }
            if reasons.contains(where: { $0.contains("refused") }) || text.contains("refused") {
                return ImageStore.Failure("registry \(host) is unreachable: connection refused")
            }
            return ImageStore.Failure("registry \(host) is unreachable: \(reasons.first ?? text)")
        }
        if let io = error as? IOError, io.errnoCode == ECONNREFUSED {
            return ImageStore.Failure("registry \(host) is unreachable: connection refused")
        }
        if let client = error as? HTTPClientError {
            switch client {
            case .connectTimeout, .socksHandshakeTimeout:
                return ImageStore.Failure("registry \(host) is unreachable: no connection within \(configuration.connectTimeout)")
            case .deadlineExceeded:
                return ImageStore.Failure("registry \(host) did not answer within \(configuration.requestTimeout)")
            case .readTimeout:
                return ImageStore.Failure("registry \(host) stopped sending for \(configuration.readTimeout) (read timeout)")
            case .remoteConnectionClosed:
                return ImageStore.Failure("registry \(host) closed the connection")
            default:
                break
            }
        }
        if error is NIOSSLError || error is BoringSSLError || text.contains("SSL") || text.contains("handshake") {
            let hint = text.contains("WRONG_VERSION_NUMBER") || text.contains("wrong version number") || text.contains("eofDuringHandshake")
                ? "does it speak plain HTTP? then list it as an insecure registry (flotilla-agent --insecure-registry \(registry))"
                : "is its certificate signed by a CA this node trusts? (a private CA can be added to the trust store)"
            return ImageStore.Failure("TLS with registry \(host) failed (\(text)): \(hint)")
        }
        if text.contains("refused") { return ImageStore.Failure("registry \(host) is unreachable: connection refused") }
        return ImageStore.Failure("registry \(host): \(text)")
    }

    static func timeAmount(_ duration: Duration) -> TimeAmount {
        .nanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
    }
}
