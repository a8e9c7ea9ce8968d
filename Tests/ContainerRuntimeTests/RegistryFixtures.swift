@testable import ContainerRuntime
import Foundation
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Debian's `docker-registry` serving on a free loopback port, its storage in a temporary directory; optionally
/// with htpasswd basic auth and TLS (a CA and a certificate for 127.0.0.1 made with openssl). `with` always
/// stops the process (by its PID) and removes the directory, also when the body fails.
final class LocalRegistry: Sendable {
    static let available = ["/usr/bin/docker-registry", "/usr/bin/skopeo", "/usr/bin/python3"].allSatisfy {
        FileManager.default.isExecutableFile(atPath: $0)
    }
    static let authAvailable = available && ["/usr/bin/htpasswd", "/usr/bin/openssl"].allSatisfy {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    let directory: TemporaryDirectory
    /// "127.0.0.1:PORT", as image references write it.
    let host: String
    let process: ChildProcess
    /// The CA that signed the registry's certificate (with `tls`).
    var caFile: String { directory.path + "/ca.pem" }
    let credentials: RegistryCredentials?

    private init(directory: TemporaryDirectory, host: String, process: ChildProcess, credentials: RegistryCredentials?) {
        self.directory = directory
        self.host = host
        self.process = process
        self.credentials = credentials
    }

    static func with<Value>(
        credentials: RegistryCredentials? = nil, tls: Bool = false, _ body: (LocalRegistry) async throws -> Value
    ) async throws -> Value {
        let directory = try TemporaryDirectory(prefix: "flotilla-registry")
        guard let port = ProcessDriver.freePort() else { throw ChildProcessError("no free port") }
        var config = """
        version: 0.1
        log: {level: error}
        storage: {filesystem: {rootdirectory: \(directory.path)/data}}
        http:
          addr: 127.0.0.1:\(port)

        """
        if tls {
            try run("/bin/sh", ["-c", """
                set -e; cd '\(directory.path)'
                openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=flotilla-test-ca
                openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1
                printf 'subjectAltName=IP:127.0.0.1\\n' > san
                openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san
                """])
            config += "  tls: {certificate: \(directory.path)/server.pem, key: \(directory.path)/server.key}\n"
        }
        if let credentials {
            try run("/usr/bin/htpasswd", ["-Bbc", directory.path + "/htpasswd", credentials.username, credentials.password])
            config += "auth: {htpasswd: {realm: flotilla-test, path: \(directory.path)/htpasswd}}\n"
        }
        try config.write(toFile: directory.path + "/config.yml", atomically: true, encoding: .utf8)
        let process = try ChildProcess("/usr/bin/docker-registry", ["serve", directory.path + "/config.yml"])
        let registry = LocalRegistry(directory: directory, host: "127.0.0.1:\(port)", process: process, credentials: credentials)
        do {
            try await waitForListener(port: port, process: process)
            let value = try await body(registry)
            _ = await process.stop()
            return value
        } catch {
            _ = await process.stop()
            throw error
        }
    }

    /// Pushes the image tagged `tag` in an OCI layout as `name` (e.g. "flt/app:1"), with skopeo.
    func push(layout: String, tag: String = "1.0", as name: String) throws {
        var arguments = ["copy", "--quiet", "--dest-tls-verify=false"]
        if let credentials { arguments += ["--dest-creds", "\(credentials.username):\(credentials.password)"] }
        try Self.run("/usr/bin/skopeo", arguments + ["oci:\(layout):\(tag)", "docker://\(host)/\(name)"])
    }

    /// Where the registry keeps a blob's bytes.
    func blobData(_ digest: String) -> String {
        let hex = String(digest.dropFirst("sha256:".count))
        return directory.path + "/data/docker/registry/v2/blobs/sha256/\(hex.prefix(2))/\(hex)/data"
    }

    static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let said = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ChildProcessError("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: said, as: UTF8.self))")
        }
    }

    /// Polls (with a deadline) until something accepts connections on the loopback port.
    static func waitForListener(port: Int, process: ChildProcess? = nil) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            if canConnect(port: port) { return }
            if let process, !process.isRunning { throw ChildProcessError("the server exited: \(process.standardError)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw ChildProcessError("nothing listens on 127.0.0.1:\(port) after 15 s: \(process?.standardError ?? "")")
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

/// A tiny registry in python3 that serves one OCI layout (`/v2/<any name>/manifests/<tag or digest>` and
/// `/blobs/<digest>`) behind the bearer-token flow: 401 with `WWW-Authenticate: Bearer realm=…/token,
/// service=…,scope=…`, a token from `/token` only for that service and scope (and, when `password` is set, only
/// with basic credentials `user:<password>`). The tag "multi" is an image index with an arm64 entry and the
/// layout's image as amd64. With `tamper`, every manifest is served with a byte appended.
final class TokenRegistry: Sendable {
    let process: ChildProcess
    let host: String
    let directory: TemporaryDirectory

    private init(process: ChildProcess, host: String, directory: TemporaryDirectory) {
        self.process = process
        self.host = host
        self.directory = directory
    }

    static let script = #"""
    import base64, hashlib, http.server, json, os, signal, socketserver, sys, urllib.parse
    # stop() sends SIGTERM, which may come in ignored or blocked from the test process.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    layout, port_file, password, tamper = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    index = json.load(open(layout + "/index.json"))
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    image = index["manifests"][0]
    multi = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": image["mediaType"], "digest": "sha256:" + "0" * 64, "size": 10, "platform": {"os": "linux", "architecture": "arm64"}},
        {"mediaType": image["mediaType"], "digest": image["digest"], "size": image["size"], "platform": {"os": "linux", "architecture": "amd64"}}]}).encode()
    blobs = {"sha256:" + hashlib.sha256(multi).hexdigest(): multi}
    def blob(digest):
        if digest in blobs: return blobs[digest]
        try: return open(layout + "/blobs/sha256/" + digest.split(":")[1], "rb").read()
        except Exception: return None
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args): pass
        def send(self, code, body=b"", headers={}):
            self.send_response(code)
            for key, value in headers.items(): self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def do_GET(self):
            if self.path.startswith("/token"):
                wanted = "Basic " + base64.b64encode(("user:" + password).encode()).decode()
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                if query.get("service") != ["flotilla-test"] or query.get("scope") != ["repository:flt/app:pull"] \
                        or (password and self.headers.get("Authorization") != wanted):
                    return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"no token for you"}]}')
                return self.send(200, json.dumps({"token": "t0k3n"}).encode(), {"Content-Type": "application/json"})
            if self.headers.get("Authorization") != "Bearer t0k3n":
                realm = "http://%s/token" % self.headers["Host"]
                return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}', {
                    "WWW-Authenticate": 'Bearer realm="%s",service="flotilla-test",scope="repository:flt/app:pull"' % realm})
            base, kind, ref = self.path.rsplit("/", 2)
            if kind == "manifests":
                if ref == "multi": data, media = multi, "application/vnd.oci.image.index.v1+json"
                elif ref in tags: data, media = blob(tags[ref]["digest"]), tags[ref]["mediaType"]
                else: data, media = blob(ref), image["mediaType"]
                if data is None:
                    return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}')
                return self.send(200, data + (b" " if tamper else b""), {"Content-Type": media})
            data = blob(ref)
            if data is None: return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}')
            return self.send(200, data, {"Content-Type": "application/octet-stream"})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    open(port_file, "w").write(str(server.server_address[1]))
    server.serve_forever()
    """#

    static func with<Value>(
        layout: String, password: String = "", tamper: Bool = false, _ body: (TokenRegistry) async throws -> Value
    ) async throws -> Value {
        let directory = try TemporaryDirectory(prefix: "flotilla-token-registry")
        let portFile = directory.path + "/port"
        let process = try ChildProcess("/usr/bin/python3", ["-c", script, layout, portFile, password, tamper ? "1" : "0"])
        do {
            let deadline = ContinuousClock.now + .seconds(15)
            var port: Int?
            while port == nil, ContinuousClock.now < deadline, process.isRunning {
                port = (try? String(contentsOfFile: portFile, encoding: .utf8)).flatMap { Int($0) }
                if port == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            guard let port else { throw ChildProcessError("the token registry did not start: \(process.standardError)") }
            let value = try await body(TokenRegistry(process: process, host: "127.0.0.1:\(port)", directory: directory))
            _ = await process.stop()
            return value
        } catch {
            _ = await process.stop()
            throw error
        }
    }
}
