import Foundation

/// Writes an OCI image layout at `path`, tagged `tag`, whose one layer holds the directory `rootfs` (python3's
/// tarfile; tests of images and containers use it). Its config sets PATH=/bin.
public func writeOCILayout(_ path: String, rootfs: String, tag: String = "1.0") throws {
    let script = """
    import hashlib, io, json, os, sys, tarfile
    out, root, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out + "/blobs/sha256")
    def blob(data, media):
        digest = hashlib.sha256(data).hexdigest()
        open(out + "/blobs/sha256/" + digest, "wb").write(data)
        return {"mediaType": media, "digest": "sha256:" + digest, "size": len(data)}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as t: t.add(root, arcname=".")
    layer = blob(buffer.getvalue(), "application/vnd.oci.image.layer.v1.tar+gzip")
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": []}}).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [layer]}).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"org.opencontainers.image.ref.name": tag}
    json.dump({"schemaVersion": 2, "manifests": [manifest]}, open(out + "/index.json", "w"))
    open(out + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
    """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    process.arguments = ["-c", script, path, rootfs, tag]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw FixtureError("python3 could not write the OCI layout at \(path)") }
}

/// A root file system at `path` with /bin/busybox (busybox-static) and links for `applets`.
public func writeBusyboxRoot(_ path: String, applets: [String]) throws {
    for directory in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        try FileManager.default.createDirectory(atPath: path + "/" + directory, withIntermediateDirectories: true)
    }
    try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: path + "/bin/busybox")
    for applet in applets {
        try FileManager.default.createSymbolicLink(atPath: path + "/bin/" + applet, withDestinationPath: "busybox")
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
