/// How the autoscaler writes numbers and durations, the same in its decisions' reasons and in the CLI.
public enum AutoscaleText {
    /// "1 replica", "5 replicas".
    public static func replicas(_ count: UInt32) -> String { count == 1 ? "1 replica" : "\(count) replicas" }

    /// 820, 2.5, 0.3: whole above 100 or when whole, else one decimal.
    public static func number(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        if value >= 100 || tenths % 10 == 0 { return String(Int(value.rounded())) }
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// 15 s, 60 s, 500 ms, 5 min.
    public static func duration(_ ms: UInt64) -> String {
        if ms % 60_000 == 0 && ms >= 120_000 { return "\(ms / 60_000) min" }
        if ms % 1_000 == 0 { return "\(ms / 1_000) s" }
        return "\(ms) ms"
    }
}
