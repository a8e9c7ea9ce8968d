/// Prometheus text exposition format (version 0.0.4), written family by family: for values known only at
/// scrape time (the load balancer's counters and latency buckets), which a registry's handlers cannot hold.
///
/// Each family gets its `# HELP` and `# TYPE` lines once, before its samples; label values are escaped
/// (backslash, double quote, newline) as the format requires.
public struct PrometheusText: Sendable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public private(set) var bytes: [UInt8] = []

    public init() {}

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// Starts a family: `name` is its base name (a histogram's samples add `_bucket`, `_sum`, `_count`).
    public mutating func family(_ name: String, _ kind: Kind, help: String) {
        append("# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n")
    }

    /// One sample line; integers print without a fraction so large counters stay exact.
    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: UInt64) {
        append("\(name)\(Self.labelText(labels)) \(value)\n")
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        append("\(name)\(Self.labelText(labels)) \(Self.format(value))\n")
    }

    /// A histogram's samples: `counts[i]` are the observations in bucket i only (not cumulative), one more
    /// count than bounds (the last is above every bound, the `+Inf` bucket's share); bounds ascend.
    public mutating func histogram(
        _ name: String, _ labels: [(String, String)], upperBounds: [Double], counts: [UInt64], sum: Double
    ) {
        precondition(counts.count == upperBounds.count + 1, "one count per bound plus the +Inf bucket")
        var cumulative: UInt64 = 0
        for (index, bound) in upperBounds.enumerated() {
            cumulative += counts[index]
            sample(name + "_bucket", labels + [("le", Self.format(bound))], cumulative)
        }
        cumulative += counts[upperBounds.count]
        sample(name + "_bucket", labels + [("le", "+Inf")], cumulative)
        sample(name + "_sum", labels, sum)
        sample(name + "_count", labels, cumulative)
    }

    private mutating func append(_ text: String) { bytes.append(contentsOf: text.utf8) }

    static func labelText(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        return "{" + labels.map { "\($0.0)=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func escapeLabel(_ value: String) -> String {
        var result = ""
        for character in value {
            switch character {
            case "\\": result += "\\\\"
            case "\"": result += "\\\""
            case "\n": result += "\\n"
            default: result.append(character)
            }
        }
        return result
    }

    static func escapeHelp(_ help: String) -> String {
        help.replacingAll("\\", with: "\\\\").replacingAll("\n", with: "\\n")
    }

    /// Go's formatting of special values (`+Inf`, `-Inf`, `NaN`); whole numbers without a fraction.
    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return "\(value)"
    }
}

extension String {
    fileprivate func replacingAll(_ target: Character, with replacement: String) -> String {
        var result = ""
        for character in self { if character == target { result += replacement } else { result.append(character) } }
        return result
    }
}
