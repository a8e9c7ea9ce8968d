import Foundation

/// A fresh directory under the system's temporary directory, removed with everything in it when the value
/// goes away (also when the test fails).
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "flotilla-test") throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
