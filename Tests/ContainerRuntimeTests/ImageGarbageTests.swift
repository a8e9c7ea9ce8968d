@testable import ContainerRuntime
import Foundation
import TestSupport
import Testing

/// OCI archives imported, and the store's index and garbage collection: images in use kept, unused ones
/// removed by age or disk budget, blobs shared with a kept image kept.
@Suite("Container runtime: image archives, the image index and garbage collection")
struct ImageGarbageTests {
    static func contents(_ path: String) -> Set<String> { Set((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []) }

    @Test("an OCI archive written by skopeo imports by tag, or without one when it holds one image",
          .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/skopeo"), "needs skopeo (CI installs it)"))
    func archive() async throws {
        let work = try TemporaryDirectory()
        let digest = try ImageStoreTests.makeLayout(work.path + "/layout")
        try LocalRegistry.run("/usr/bin/skopeo", ["copy", "--quiet", "oci:\(work.path)/layout:1.0", "oci-archive:\(work.path)/app.tar:flt/app:1"])
        let store = try ImageStore(root: work.path + "/store")
        let image = try await store.prepare(reference: "oci-archive:\(work.path)/app.tar:flt/app:1")
        #expect(image.digest == digest)
        #expect(try String(contentsOfFile: image.rootfs + "/etc/new", encoding: .utf8) == "fresh")
        #expect(try await store.prepare(reference: "oci-archive:\(work.path)/app.tar") == image)
        let missing = await #expect(throws: ImageStore.Failure.self) { try await store.prepare(reference: "oci-archive:\(work.path)/app.tar:2") }
        #expect(missing?.description.contains("has no image tagged '2'") == true)
        #expect(Self.contents(store.root + "/tmp").isEmpty, "the extracted layout is removed")
        #expect(store.list().map(\.reference) == ["oci-archive:\(work.path)/app.tar", "oci-archive:\(work.path)/app.tar:flt/app:1"])
    }

    @Test("a layout entry that is an image index imports the entry for linux and the node's architecture")
    func multiPlatformLayout() throws {
        let work = try TemporaryDirectory()
        let layout = work.path + "/layout"
        let digest = try ImageStoreTests.makeLayout(layout)
        let size = try FileManager.default.attributesOfItem(atPath: layout + "/blobs/sha256/" + ImageStore.hex(digest))[.size] as? Int ?? 0
        let manifestType = "application/vnd.oci.image.manifest.v1+json"
        let index = try JSONSerialization.data(withJSONObject: ["schemaVersion": 2, "manifests": [
            ["mediaType": manifestType, "digest": "sha256:" + String(repeating: "0", count: 64), "size": 1, "platform": ["os": "linux", "architecture": "arm64"]],
            ["mediaType": manifestType, "digest": digest, "size": size, "platform": ["os": "linux", "architecture": "amd64"]],
        ]])
        let indexDigest = ImageStore.digest(of: index)
        try index.write(to: URL(fileURLWithPath: layout + "/blobs/sha256/" + ImageStore.hex(indexDigest)))
        try JSONSerialization.data(withJSONObject: ["schemaVersion": 2, "manifests": [[
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": indexDigest, "size": index.count,
            "annotations": ["org.opencontainers.image.ref.name": "multi"]]]]).write(to: URL(fileURLWithPath: layout + "/index.json"))
        let amd64 = try ImageStore(root: work.path + "/amd64", registries: RegistryConfiguration(architecture: "amd64"))
        #expect(try amd64.importLayout(layout, reference: "multi").digest == digest)
        let s390x = try ImageStore(root: work.path + "/s390x", registries: RegistryConfiguration(architecture: "s390x"))
        let none = #expect(throws: ImageStore.Failure.self) { try s390x.importLayout(layout, reference: "multi") }
        #expect(none?.description == "image oci:\(layout):multi has no linux/s390x variant (it has: linux/arm64, linux/amd64)")
    }

    @Test("garbage collection keeps images in use and the blobs they share, removes unused ones by age, and the index outlives the store value")
    func byAge() throws {
        let work = try TemporaryDirectory()
        let a = try ImageStoreTests.makeLayout(work.path + "/a", mode: "a")
        let b = try ImageStoreTests.makeLayout(work.path + "/b", mode: "b")
        let store = try ImageStore(root: work.path + "/store")
        _ = try store.importLayout(work.path + "/a", reference: "1.0")
        _ = try store.importLayout(work.path + "/b", reference: "1.0")
        let aBlobs = try #require(store.list().first { $0.digest == a }?.blobs)
        let bBlobs = try #require(store.list().first { $0.digest == b }?.blobs)
        let shared = Set(aBlobs).intersection(bBlobs)
        #expect(shared.count == 2, "the two images share their layers")

        // A new value over the same root reads the same index (from here on, the only one used).
        let reopened = try ImageStore(root: work.path + "/store")
        #expect(reopened.list() == store.list())

        let later = Date().addingTimeInterval(3600)
        let policy = ImageGarbagePolicy(maximumUnusedAge: .seconds(60), recentUseGrace: .zero)
        let removed = try reopened.collectGarbage(inUse: [b], policy: policy, now: later)
        #expect(removed.map(\.digest) == [a])
        #expect(reopened.list().map(\.digest) == [b])
        #expect(Self.contents(store.root + "/rootfs") == [ImageStore.hex(b)])
        #expect(Self.contents(store.root + "/blobs/sha256") == Set(bBlobs.map(ImageStore.hex)), "a's own blobs gone, the shared layers kept")
        #expect(try String(contentsOfFile: store.rootfsPath(b) + "/bin/app", encoding: .utf8) == "v1")

        // In use now (marked used at `later`), b survives a collection an hour after; then, no longer in use, it goes.
        #expect(try reopened.collectGarbage(inUse: [], policy: policy, now: later.addingTimeInterval(30)).isEmpty)
        #expect(try reopened.collectGarbage(inUse: [], policy: policy, now: later.addingTimeInterval(3600)).map(\.digest) == [b])
        #expect(Self.contents(store.root + "/rootfs").isEmpty && Self.contents(store.root + "/blobs/sha256").isEmpty)
        #expect(reopened.list().isEmpty)
        #expect(try ImageStore(root: work.path + "/store").list().isEmpty)
    }

    @Test("over the disk budget, the least recently used image not in use goes first; recently used and in-use images stay")
    func byBudget() throws {
        let work = try TemporaryDirectory()
        let a = try ImageStoreTests.makeLayout(work.path + "/a", mode: "a")
        let b = try ImageStoreTests.makeLayout(work.path + "/b", mode: "b")
        let c = try ImageStoreTests.makeLayout(work.path + "/c", mode: "c")
        let store = try ImageStore(root: work.path + "/store")
        for name in ["a", "b", "c"] { _ = try store.importLayout(work.path + "/" + name, reference: "1.0") }
        let one = try #require(store.list().first).size + (try #require(store.list().first)).unpackedSize
        let now = Date().addingTimeInterval(60)
        // Everything was used just now: within the grace, nothing goes, budget or not.
        #expect(try store.collectGarbage(inUse: [], policy: ImageGarbagePolicy(diskBudget: one), now: now).isEmpty)
        // c is in use a minute later; then, with a in use, b and c are over the budget of two images: b, used
        // before c, goes.
        #expect(try store.collectGarbage(inUse: [c], now: now).isEmpty)
        let policy = ImageGarbagePolicy(diskBudget: 2 * one, recentUseGrace: .zero)
        let removed = try store.collectGarbage(inUse: [a], policy: policy, now: now.addingTimeInterval(60))
        #expect(removed.map(\.digest) == [b])
        #expect(Set(store.list().map(\.digest)) == [a, c])
        // A budget below the in-use image alone removes everything else, never a.
        #expect(try store.collectGarbage(inUse: [a], policy: ImageGarbagePolicy(diskBudget: 1, recentUseGrace: .zero), now: now.addingTimeInterval(60)).map(\.digest) == [c])
        #expect(store.list().map(\.digest) == [a])
    }

    @Test("files no image references (a failed pull's blobs, a crash's temporaries) are collected; a pull in progress keeps its own")
    func orphans() throws {
        let work = try TemporaryDirectory()
        let store = try ImageStore(root: work.path + "/store")
        let orphan = ImageStore.digest(of: Data("left by a failed pull".utf8))
        let pinned = ImageStore.digest(of: Data("being pulled".utf8))
        try store.storeBlob(Data("left by a failed pull".utf8), digest: orphan)
        try store.storeBlob(Data("being pulled".utf8), digest: pinned)
        try FileManager.default.createDirectory(atPath: store.root + "/tmp/download-crashed", withIntermediateDirectories: true)
        let pins = store.shared.pins()
        pins.add([pinned])
        try store.collectGarbage(inUse: [], now: Date().addingTimeInterval(2 * 3600))
        #expect(Self.contents(store.root + "/blobs/sha256") == [ImageStore.hex(pinned)])
        #expect(Self.contents(store.root + "/tmp").isEmpty)
        pins.release()
        try store.collectGarbage(inUse: [])
        #expect(Self.contents(store.root + "/blobs/sha256").isEmpty)
    }
}
