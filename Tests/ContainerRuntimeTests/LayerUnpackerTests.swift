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
