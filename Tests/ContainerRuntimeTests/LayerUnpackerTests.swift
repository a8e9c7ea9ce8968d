@testable import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// Image layers applied onto a root file system: files, links and modes; whiteouts and opaque directories from
/// later layers; nothing written outside the root, whatever the layer says. Layers are made with Python's
/// tarfile (needs python3).
@Suite("Container runtime: unpacking image layers")
struct LayerUnpackerTests {
    /// Writes a layer at `path` from a Python snippet that adds entries to `t` (a tarfile opened for writing).
    static func makeLayer(_ path: String, gzip: Bool = false, _ body: String) throws {
        let script = """
        import io, tarfile, sys
        t = tarfile.open(sys.argv[1], "w:gz" if sys.argv[2] == "1" else "w", format=tarfile.PAX_FORMAT)
        def add(name, kind="file", data=b"", mode=0o644, target=""):
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir": info.type = tarfile.DIRTYPE
            elif kind == "symlink": info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "hardlink": info.type, info.linkname = tarfile.LNKTYPE, target
            else: info.size = len(data)
            t.addfile(info, io.BytesIO(data) if kind == "file" else None)
        \(body)
        t.close()
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, path, gzip ? "1" : "0"]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw LayerUnpacker.Failure("python3 could not write the layer") }
    }

    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    @Test("files, directories, modes, symlinks and hard links land as the layer says; gzip or not")
    func basics() throws {
        for gzip in [false, true] {
            let work = try TemporaryDirectory()
            let root = work.path + "/rootfs"
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try Self.makeLayer(work.path + "/layer", gzip: gzip, """
            add("usr", "dir", mode=0o755)
            add("usr/bin", "dir", mode=0o755)
            add("bin", "symlink", target="usr/bin")
            add("usr/bin/hello", data=b"#!/bin/sh\\necho hi\\n", mode=0o755)
            add("bin/via-link", data=b"through the symlink")
            add("etc/motd", data=b"welcome")
            add("etc/motd.hard", "hardlink", target="etc/motd")
            add("deep/" + "d" * 120 + "/file", data=b"long path")
            """)
            #expect(try LayerUnpacker.unpack(layer: work.path + "/layer", into: root) == 8)
            #expect(Self.read(root + "/usr/bin/hello") == "#!/bin/sh\necho hi\n")
            let mode = try FileManager.default.attributesOfItem(atPath: root + "/usr/bin/hello")[.posixPermissions] as? Int
            #expect(mode == 0o755)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/bin") == "usr/bin")
            #expect(Self.read(root + "/usr/bin/via-link") == "through the symlink", "written through bin -> usr/bin, inside the root")
            #expect(Self.read(root + "/etc/motd.hard") == "welcome")
            #expect(Self.read(root + "/deep/" + String(repeating: "d", count: 120) + "/file") == "long path")
        }
    }

    @Test("a later layer's whiteouts delete lower files and directories; an opaque marker empties a directory of the lower layers' entries only")
    func whiteouts() throws {
        let work = try TemporaryDirectory()
        let root = work.path + "/rootfs"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Self.makeLayer(work.path + "/lower", """
        add("app/config", data=b"old")
        add("app/cache/a", data=b"1")
        add("data/keep", data=b"lower")
        add("data/old", data=b"lower")
        """)
        try Self.makeLayer(work.path + "/upper", """
        add("app/.wh.config")
        add("app/.wh.cache")
        add("data/new", data=b"upper")
        add("data/.wh..wh..opq")
        """)
        try LayerUnpacker.unpack(layer: work.path + "/lower", into: root)
        try LayerUnpacker.unpack(layer: work.path + "/upper", into: root)
        #expect(!FileManager.default.fileExists(atPath: root + "/app/config"))
        #expect(!FileManager.default.fileExists(atPath: root + "/app/cache"))
        #expect(FileManager.default.fileExists(atPath: root + "/app"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/data") == ["new"])
        #expect(!FileManager.default.fileExists(atPath: root + "/app/.wh.config"), "whiteout markers are not files")
    }

    @Test("nothing escapes the root: '..' is refused, and absolute or climbing symlinks resolve inside it")
    func containment() throws {
        let work = try TemporaryDirectory()
        let root = work.path + "/rootfs"
        let outside = work.path + "/outside"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try Self.makeLayer(work.path + "/climb", """
        add("../evil", data=b"x")
        """)
        #expect(throws: LayerUnpacker.Failure.self) { try LayerUnpacker.unpack(layer: work.path + "/climb", into: root) }
        #expect(!FileManager.default.fileExists(atPath: work.path + "/evil"))

        try Self.makeLayer(work.path + "/links", """
        add("abs", "symlink", target="\(outside)")
        add("abs/pwned", data=b"x")
        add("rel", "symlink", target="../../../outside")
        add("rel/pwned2", data=b"y")
        """)
        try LayerUnpacker.unpack(layer: work.path + "/links", into: root)
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty, "nothing written outside the root")
        #expect(Self.read(root + outside + "/pwned") == "x", "an absolute target is the root's path")
        #expect(Self.read(root + "/outside/pwned2") == "y", "'..' in a target stops at the root")
    }

    @Test("a truncated or corrupt layer is refused with a reason")
    func corrupt() throws {
        let work = try TemporaryDirectory()
        let root = work.path + "/rootfs"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Self.makeLayer(work.path + "/layer", gzip: true, """
        add("big", data=b"z" * 200000)
        """)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: work.path + "/layer"))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: work.path + "/truncated"))
        let truncated = #expect(throws: LayerUnpacker.Failure.self) { try LayerUnpacker.unpack(layer: work.path + "/truncated", into: root) }
        #expect(truncated?.description.contains("truncated") == true)
        var garbage = [UInt8](repeating: 0x41, count: 1024)
        garbage[0] = 0x42
        try Data(garbage).write(to: URL(fileURLWithPath: work.path + "/garbage"))
        #expect(throws: LayerUnpacker.Failure.self) { try LayerUnpacker.unpack(layer: work.path + "/garbage", into: root) }
    }
}

/// Images imported from an OCI image layout: blobs verified by digest and size, layers unpacked once, the
/// config's defaults read; a tampered blob refused.
@Suite("Container runtime: the image store")
struct ImageStoreTests {
    /// An OCI layout at `path` tagged "1.0": two gzip layers (the second whites out a file of the first) and a
    /// config with Env, Entrypoint, Cmd and WorkingDir. Written with python3, byte for byte the same every time:
    /// layouts with different `mode`s (in the config's Env) share their layers. Returns the manifest's digest.
    @discardableResult
    static func makeLayout(_ path: String, mode: String = "demo") throws -> String {
        let script = """
        import gzip, hashlib, io, json, os, sys, tarfile
        out, mode = sys.argv[1], sys.argv[2]
        os.makedirs(out + "/blobs/sha256")
        def blob(data):
            digest = hashlib.sha256(data).hexdigest()
            open(out + "/blobs/sha256/" + digest, "wb").write(data)
            return {"digest": "sha256:" + digest, "size": len(data)}
        def layer(entries):
            buffer = io.BytesIO()
            t = tarfile.open(fileobj=buffer, mode="w")
            for name, data in entries:
                info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
            t.close()
            return blob(gzip.compress(buffer.getvalue(), mtime=0))
        l1 = layer([("bin/app", b"v1"), ("etc/old", b"gone later")])
        l2 = layer([("etc/.wh.old", b""), ("etc/new", b"fresh")])
        config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin", "MODE=" + mode],
            "Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "WorkingDir": "/srv"},
            "rootfs": {"type": "layers", "diff_ids": []}}).encode())
        for d in (l1, l2): d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        config["mediaType"] = "application/vnd.oci.image.config.v1+json"
        manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [l1, l2]}).encode())
        manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
        manifest["annotations"] = {"org.opencontainers.image.ref.name": "1.0"}
        json.dump({"schemaVersion": 2, "manifests": [manifest]}, open(out + "/index.json", "w"))
        open(out + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
        print(manifest["digest"])
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, path, mode]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let printed = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ImageStore.Failure("python3 could not write the layout") }
        return String(decoding: printed, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("an image imports from a layout: layers applied in order, config defaults read, unpacked only once")
    func importsLayout() throws {
        let work = try TemporaryDirectory()
        try Self.makeLayout(work.path + "/layout")
        let store = try ImageStore(root: work.path + "/store")
        let image = try store.importLayout(work.path + "/layout", reference: "1.0")
        #expect(image.digest.hasPrefix("sha256:"))
        #expect(try String(contentsOfFile: image.rootfs + "/bin/app", encoding: .utf8) == "v1")
        #expect(try String(contentsOfFile: image.rootfs + "/etc/new", encoding: .utf8) == "fresh")
        #expect(!FileManager.default.fileExists(atPath: image.rootfs + "/etc/old"))
        #expect(image.config == ImageConfig(env: ["PATH=/bin", "MODE=demo"], entrypoint: ["/bin/app"], cmd: ["--serve"], workingDir: "/srv", user: ""))
        // A second import finds the blobs and the root file system in place.
        try FileManager.default.removeItem(atPath: image.rootfs + "/etc/new")
        #expect(try store.importLayout(work.path + "/layout") == image)
        #expect(!FileManager.default.fileExists(atPath: image.rootfs + "/etc/new"), "not unpacked again")
        let unknown = #expect(throws: ImageStore.Failure.self) { try store.importLayout(work.path + "/layout", reference: "2.0") }
        #expect(unknown?.description.contains("has: 1.0") == true)
    }

    @Test("image references: oci:PATH:TAG and oci:PATH import from a layout; a reference without a registry host says what to write")
    func references() async throws {
        let work = try TemporaryDirectory()
        try Self.makeLayout(work.path + "/lay:out")
        let store = try ImageStore(root: work.path + "/store")
        let tagged = try await store.prepare(reference: "oci:\(work.path)/lay:out:1.0")
        #expect(try await store.prepare(reference: "oci:\(work.path)/lay:out") == tagged)
        for hostless in ["web:1.2", "library/nginx", "web"] {
            let refused = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: hostless) }
            #expect(refused?.description.contains("HOST[:PORT]/NAME[:TAG]") == true, "\(hostless)")
        }
        #expect(store.list().map(\.reference) == ["oci:\(work.path)/lay:out", "oci:\(work.path)/lay:out:1.0"])
    }

    @Test("a blob whose bytes do not match its digest is refused, and nothing is unpacked")
    func tamperedBlob() throws {
        let work = try TemporaryDirectory()
        try Self.makeLayout(work.path + "/layout")
        // Change one byte of the biggest blob (a layer), keeping its size.
        let blobs = work.path + "/layout/blobs/sha256"
        let names = try FileManager.default.contentsOfDirectory(atPath: blobs)
        let sizes = try names.map { ($0, try FileManager.default.attributesOfItem(atPath: blobs + "/" + $0)[.size] as? Int ?? 0) }
        let victim = try #require(sizes.max { $0.1 < $1.1 }?.0)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: blobs + "/" + victim)))
        bytes[bytes.count / 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: blobs + "/" + victim))
        let store = try ImageStore(root: work.path + "/store")
        let failure = #expect(throws: ImageStore.Failure.self) { try store.importLayout(work.path + "/layout") }
        #expect(failure?.description.contains("does not match its digest") == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: work.path + "/store/rootfs").isEmpty)
    }
}
