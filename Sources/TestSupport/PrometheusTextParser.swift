/// A strict reader of the Prometheus text exposition format (0.0.4), for tests that scrape /metrics: it
/// refuses what Prometheus would refuse, and checks histograms for consistency.
///
/// Checked: `# HELP` / `# TYPE` at most once per family and before its samples; a family's lines in one
/// group; metric and label names; label values' escapes; sample values (floats, `+Inf`, `-Inf`, `NaN`);
/// no series twice; a histogram's samples are `_bucket` (with `le`), `_sum` and `_count`, its buckets ascend
/// in `le` with non-decreasing counts, end with `+Inf`, and that bucket equals `_count`.
public struct PrometheusExposition: Sendable {
    public struct Sample: Sendable, Equatable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public struct Family: Sendable {
        public var name: String
        public var type: String
        public var help: String?
        public var samples: [Sample]
    }

    public struct Malformed: Error, CustomStringConvertible {
        public let line: Int
        public let reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    public private(set) var families: [String: Family] = [:]

    /// The value of the one sample named `name` whose labels include `labels`; nil when none or several match.
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matches = families.values.flatMap(\.samples).filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }
        return matches.count == 1 ? matches[0].value : nil
    }

    public init(parsing text: String) throws {
        var order: [String] = []
        var closed: Set<String> = []
        var seriesSeen: Set<String> = []
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = offset + 1
            let line = String(rawLine)
            func fail(_ reason: String) -> Malformed { Malformed(line: number, reason: "\(reason): \(line)") }
            if line.isEmpty { continue }
            // Which family this line belongs to; switching families closes the previous one.
            let family: String
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false).map(String.init)
                guard parts.count >= 3, parts[0] == "#", parts[1] == "HELP" || parts[1] == "TYPE" else { continue }
                family = parts[2]
                guard Self.isMetricName(family) else { throw fail("bad metric name") }
                try Self.enter(family, order: &order, closed: &closed, fail: fail)
                var entry = families[family] ?? Family(name: family, type: "untyped", help: nil, samples: [])
                if parts[1] == "HELP" {
                    guard entry.help == nil else { throw fail("second HELP") }
                    entry.help = parts.count > 3 ? parts[3] : ""
                } else {
                    guard parts.count == 4, ["counter", "gauge", "histogram", "summary", "untyped"].contains(parts[3]) else {
                        throw fail("bad TYPE")
                    }
                    guard entry.type == "untyped", entry.samples.isEmpty else { throw fail("TYPE repeated or after samples") }
                    entry.type = parts[3]
                }
                families[family] = entry
                continue
            }
            let sample = try Self.sample(line, fail: fail)
            family = Self.family(of: sample.name, in: families)
            try Self.enter(family, order: &order, closed: &closed, fail: fail)
            let series = sample.name + "{" + sample.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
            guard seriesSeen.insert(series).inserted else { throw fail("series repeated") }
            var entry = families[family] ?? Family(name: family, type: "untyped", help: nil, samples: [])
            if entry.type == "histogram" {
                guard [family + "_bucket", family + "_sum", family + "_count"].contains(sample.name) else {
                    throw fail("not a histogram sample of \(family)")
                }
                guard (sample.name == family + "_bucket") == (sample.labels["le"] != nil) else { throw fail("le only on buckets") }
            } else if entry.type != "untyped" {
                guard sample.name == family else { throw fail("sample of \(entry.type) \(family) has another name") }
            }
            entry.samples.append(sample)
            families[family] = entry
        }
        for family in families.values where family.type == "histogram" { try Self.checkHistogram(family) }
    }

    /// A histogram's samples belong to their base name's family.
    private static func family(of name: String, in families: [String: Family]) -> String {
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if families[base]?.type == "histogram" { return base }
        }
        return name
    }

    private static func enter(_ family: String, order: inout [String], closed: inout Set<String>, fail: (String) -> Malformed) throws {
        if order.last == family { return }
        guard !closed.contains(family) else { throw fail("family \(family) split into two groups") }
        if let previous = order.last { closed.insert(previous) }
        order.append(family)
    }

    private static func sample(_ line: String, fail: (String) -> Malformed) throws -> Sample {
        var rest = Substring(line)
        let name = String(rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" })
        guard isMetricName(name) else { throw fail("bad metric name") }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = String(rest.prefix { $0.isLetter || $0.isNumber || $0 == "_" })
                guard isLabelName(label), labels[label] == nil else { throw fail("bad or repeated label name") }
                rest = rest.dropFirst(label.count)
                guard rest.hasPrefix("=\"") else { throw fail("label without =\"") }
                rest = rest.dropFirst(2)
                var value = ""
                while true {
                    guard let character = rest.first else { throw fail("unterminated label value") }
                    rest = rest.dropFirst()
                    if character == "\"" { break }
                    if character == "\\" {
                        switch rest.first {
                        case "\\": value.append("\\")
                        case "\"": value.append("\"")
                        case "n": value.append("\n")
                        default: throw fail("bad escape in label value")
                        }
                        rest = rest.dropFirst()
                    } else {
                        value.append(character)
                    }
                }
                labels[label] = value
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { throw fail("expected , or }") }
            }
            rest = rest.dropFirst()
        }
        guard rest.first == " " else { throw fail("no space before the value") }
        let fields = rest.dropFirst().split(separator: " ", omittingEmptySubsequences: false)
        guard (1...2).contains(fields.count), let value = parseValue(String(fields[0])) else { throw fail("bad value") }
        if fields.count == 2, Int64(fields[1]) == nil { throw fail("bad timestamp") }
        return Sample(name: name, labels: labels, value: value)
    }

    static func parseValue(_ text: String) -> Double? {
        switch text {
        case "+Inf", "Inf": return .infinity
        case "-Inf": return -.infinity
        case "NaN": return .nan
        default: return Double(text)
        }
    }

    private static func checkHistogram(_ family: Family) throws {
        func fail(_ reason: String) -> Malformed { Malformed(line: 0, reason: "histogram \(family.name): \(reason)") }
        var groups: [[String: String]: (buckets: [(Double, Double)], sum: Double?, count: Double?)] = [:]
        for sample in family.samples {
            var key = sample.labels
            key["le"] = nil
            var group = groups[key] ?? ([], nil, nil)
            if sample.name.hasSuffix("_bucket") {
                guard let bound = parseValue(sample.labels["le"] ?? "") else { throw fail("bad le") }
                group.buckets.append((bound, sample.value))
            } else if sample.name.hasSuffix("_sum") {
                group.sum = sample.value
            } else {
                group.count = sample.value
            }
            groups[key] = group
        }
        for (labels, group) in groups {
            guard group.sum != nil, let count = group.count else { throw fail("\(labels) lacks _sum or _count") }
            guard let last = group.buckets.last, last.0 == .infinity else { throw fail("\(labels) lacks the +Inf bucket") }
            guard last.1 == count else { throw fail("\(labels): +Inf bucket \(last.1) ≠ _count \(count)") }
            for (previous, next) in zip(group.buckets, group.buckets.dropFirst()) {
                guard previous.0 < next.0 else { throw fail("\(labels): le not ascending") }
                guard previous.1 <= next.1 else { throw fail("\(labels): bucket counts decrease") }
            }
        }
    }

    static func isMetricName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" || first == ":" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ":") }
    }

    static func isLabelName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
    }
}
