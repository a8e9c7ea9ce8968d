/// Samples of a cumulative counter kept for a sliding window of the leader's time.
enum SlidingWindow {
    /// The samples received at or after `start` plus the last one before it (the baseline the window's growth
    /// starts from); only the last sample when none is that recent.
    static func trimmed<Sample>(_ history: [Sample], before start: UInt64, receivedMillis: (Sample) -> UInt64) -> [Sample] {
        guard let firstInside = history.firstIndex(where: { receivedMillis($0) >= start }) else {
            return Array(history.suffix(1))
        }
        return Array(history[max(0, firstInside - 1)...])
    }

    /// Where a window of `length` ending at `now` starts (0 early on).
    static func start(endingAt now: UInt64, length: UInt64) -> UInt64 { now &- min(now, length) }
}
