public import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An image stored on this node, as `list()` shows it (`flotilla image ls`).
public struct ImageRecord: Sendable, Equatable, Codable {
    /// The reference it was prepared by, normalized ("127.0.0.1:5000/web:1.2", "oci:/srv/layout:1.0").
    public var reference: String
    /// The manifest's digest: the image's identity (several references may share one).
    public var digest: String
    /// Bytes of the image's blobs (manifest, config, compressed layers), as pulled.
    public var size: Int64
    /// Bytes of the files of its unpacked root file system.
    public var unpackedSize: Int64
    /// When this reference was first stored on this node (whole seconds, as the index keeps them).
    public var created: Date
    /// When this reference was last prepared for a task (or reported in use to `collectGarbage`).
    public var lastUsed: Date
    /// The config blob's digest.
    var config: String
    /// Every blob the image needs (manifest, config, layers).
    var blobs: [String]
}

/// What `collectGarbage` may remove. Images in use are never removed; of the others:
/// 1. an image not used for longer than `maximumUnusedAge` is removed;
/// 2. then, while the images' total (`size + unpackedSize` per image; blobs shared by two images count twice, so
///    the total errs high) exceeds `diskBudget`, the least recently used image is removed;
/// except that an image used within `recentUseGrace` is always kept (a task may be starting on it, not yet in
/// the in-use set). Removing an image removes its references, its root file system and every blob no kept image
/// needs; files no image references (left by failed pulls) go too.
public struct ImageGarbagePolicy: Sendable {
    /// Default 24 hours.
    public var maximumUnusedAge: Duration
    /// Bytes; nil: no budget.
    public var diskBudget: Int64?
    /// Default 5 minutes.
    public var recentUseGrace: Duration

    public init(maximumUnusedAge: Duration = .seconds(24 * 3600), diskBudget: Int64? = nil, recentUseGrace: Duration = .seconds(300)) {
        self.maximumUnusedAge = maximumUnusedAge
        self.diskBudget = diskBudget
        self.recentUseGrace = recentUseGrace
    }
}

extension ImageStore {
    /// The images stored on this node, by reference.
    public func list() -> [ImageRecord] {
        shared.state.withLock { $0.records.values.sorted { $0.reference < $1.reference } }
    }

    /// Removes images as `policy` says (see `ImageGarbagePolicy`), never one whose manifest digest is in `inUse`
    /// nor anything a pull in progress uses; returns the references removed. Images in use are marked used at
    /// `now`.
    @discardableResult
    public func collectGarbage(inUse: Set<String>, policy: ImageGarbagePolicy = ImageGarbagePolicy(), now: Date = Date()) throws -> [ImageRecord] {
        let trash = temporaryPath("trash")
        try FileManager.default.createDirectory(atPath: trash, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: trash) }
        let removed: [ImageRecord] = try shared.state.withLock { state in
            for (name, record) in state.records where inUse.contains(record.digest) { state.records[name]?.lastUsed = now.wholeSeconds }
            var lastUse: [String: Date] = [:]
            var bytes: [String: Int64] = [:]
            for record in state.records.values {
                lastUse[record.digest] = max(lastUse[record.digest] ?? .distantPast, record.lastUsed)
                bytes[record.digest] = (bytes[record.digest] ?? 0) + record.size + record.unpackedSize
            }
            let pinned = state.pins
            func unused(_ digest: String, for age: Duration) -> Bool {
                !inUse.contains(digest) && pinned[digest] == nil && lastUse[digest]! < now.addingTimeInterval(-age.seconds)
            }
            var doomed = Set(lastUse.keys.filter { unused($0, for: policy.maximumUnusedAge) })
            if let budget = policy.diskBudget {
                var total = bytes.filter { !doomed.contains($0.key) }.values.reduce(0, +)
                for digest in lastUse.keys.filter({ !doomed.contains($0) && unused($0, for: policy.recentUseGrace) })
                    .sorted(by: { lastUse[$0]! < lastUse[$1]! }) where total > budget {
                    doomed.insert(digest)
                    total -= bytes[digest]!
                }
            }
            let removed = state.records.values.filter { doomed.contains($0.digest) }
            var kept = state.records.filter { !doomed.contains($0.value.digest) }
            try shared.save(kept)
            swap(&kept, &state.records)
            // Move everything no kept image and no pull in progress needs into the trash (renames: quick, and a
            // pull pinning a digest after this sees it absent, never half removed).
            let needed = Set(state.records.values.flatMap(\.blobs)).union(state.pins.keys)
            var moved = 0
            for directory in [root + "/blobs/sha256", root + "/rootfs"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where !needed.contains("sha256:" + name) {
                    moved += 1
                    _ = rename(directory + "/" + name, "\(trash)/\(moved)")
                }
            }
            return removed.sorted { $0.reference < $1.reference }
        }
        removeStaleTemporaries(olderThan: now.addingTimeInterval(-3600), except: trash)
        return removed
    }

    /// Temporary files and directories left by a crash (anything in `tmp/` untouched for an hour).
    private func removeStaleTemporaries(olderThan cutoff: Date, except current: String) {
        let directory = root + "/tmp"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where directory + "/" + name != current {
            let modified = (try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)[.modificationDate]) as? Date
            if let modified, modified < cutoff { try? FileManager.default.removeItem(atPath: directory + "/" + name) }
        }
    }
}

// MARK: - Shared state

/// What copies of one `ImageStore` share: the index (persisted to `images.json` on every change, by writing a
/// new file and renaming it over the old) and the digests pulls in progress use ("pins"), which garbage
/// collection leaves alone.
final class SharedState: Sendable {
    struct State {
        var records: [String: ImageRecord]
        /// Digest → number of operations in progress that use it.
        var pins: [String: Int] = [:]
    }

    let indexPath: String
    let state: Mutex<State>

    /// Loads the index; an unreadable one counts as empty (its images are pulled again when needed, and their
    /// files, then unreferenced, go at the next garbage collection).
    init(indexPath: String) {
        self.indexPath = indexPath
        let records = (try? Data(contentsOf: URL(fileURLWithPath: indexPath))).flatMap { try? Self.decoder.decode([ImageRecord].self, from: $0) } ?? []
        state = Mutex(State(records: Dictionary(records.map { ($0.reference, $0) }, uniquingKeysWith: { _, last in last })))
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// Writes the index atomically (called with the lock held).
    func save(_ records: [String: ImageRecord]) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try encoder.encode(records.values.sorted { $0.reference < $1.reference })
        let staging = indexPath + ".new"
        guard FileManager.default.createFile(atPath: staging, contents: data), let handle = FileHandle(forWritingAtPath: staging) else {
            throw ImageStore.Failure("cannot write \(staging)")
        }
        try handle.synchronize()
        try handle.close()
        guard rename(staging, indexPath) == 0 else { throw ImageStore.Failure("cannot replace \(indexPath): \(String(cString: strerror(errno)))") }
    }

    /// Records (or refreshes) the image stored under `name`, used now.
    func record(name: String, manifest: ImageManifest, unpackedSize: () -> Int64) throws {
        let now = Date().wholeSeconds
        let measured = state.withLock { $0.records.values.first { $0.digest == manifest.digest }?.unpackedSize } ?? unpackedSize()
        try state.withLock { state in
            let created = state.records[name].flatMap { $0.digest == manifest.digest ? $0.created : nil } ?? now
            var records = state.records
            records[name] = ImageRecord(
                reference: name, digest: manifest.digest, size: manifest.blobBytes, unpackedSize: measured, created: created,
                lastUsed: now, config: manifest.config.digest, blobs: manifest.blobs)
            try save(records)
            state.records = records
        }
    }

    /// The record stored under `name` if its root file system is in place, marked used now.
    func use(name: String, rootfsExists: (String) -> Bool) throws -> ImageRecord? {
        try state.withLock { state in
            guard var record = state.records[name], rootfsExists(record.digest) else { return nil }
            record.lastUsed = Date().wholeSeconds
            var records = state.records
            records[name] = record
            try save(records)
            state.records = records
            return record
        }
    }

    func pins() -> PinSet { PinSet(self) }
}

/// The digests one operation in progress uses; `release()` when it is done (in a `defer`).
final class PinSet {
    private let shared: SharedState
    private var digests: [String] = []

    init(_ shared: SharedState) { self.shared = shared }

    func add(_ more: [String]) {
        shared.state.withLock { state in for digest in more { state.pins[digest, default: 0] += 1 } }
        digests += more
    }

    func release() {
        shared.state.withLock { state in
            for digest in digests {
                state.pins[digest, default: 1] -= 1
                if state.pins[digest] == 0 { state.pins[digest] = nil }
            }
        }
        digests = []
    }
}

extension Date {
    /// Truncated to a whole second, as the index (ISO 8601) keeps dates.
    var wholeSeconds: Date { Date(timeIntervalSince1970: timeIntervalSince1970.rounded(.down)) }
}

extension Duration {
    /// The duration in seconds, for `Date` arithmetic.
    var seconds: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
