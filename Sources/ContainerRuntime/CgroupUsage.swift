/// Reads what a task's cgroup counted: CPU time and memory. On cgroup v1 the counters are in separate
/// hierarchies (`cpuacct/PATH/cpuacct.usage` in ns, `memory/PATH/memory.usage_in_bytes`); on v2 in the one
/// unified directory (`PATH/cpu.stat`'s `usage_usec`, `PATH/memory.current`). Files are read with `ProcFile`
/// (cgroup files report a size of 0 or 4096, which Foundation trusts).
public struct CgroupUsage: Sendable {
    /// Where the hierarchies are mounted (`/sys/fs/cgroup`; a temporary directory in tests).
    public let root: String

    public init(root: String = "/sys/fs/cgroup") {
        self.root = root
    }

    /// The cgroup at `path` (relative to each hierarchy, e.g. "flotilla-node/proc-t1"); nil when it has no
    /// readable CPU counter (gone, or no such cgroup). Memory is 0 when only it is unreadable.
    public func stats(ofCgroup path: String) -> TaskStats? {
        let path = path.hasPrefix("/") ? String(path.dropFirst()) : path
        if let nanoseconds = ProcFile.read("\(root)/cpuacct/\(path)/cpuacct.usage").flatMap(Self.number) {
            let memory = ProcFile.read("\(root)/memory/\(path)/memory.usage_in_bytes").flatMap(Self.number) ?? 0
            return TaskStats(cpuNanoseconds: nanoseconds, memoryBytes: memory)
        }
        guard let microseconds = ProcFile.read("\(root)/\(path)/cpu.stat").flatMap(Self.usageMicroseconds) else { return nil }
        let memory = ProcFile.read("\(root)/\(path)/memory.current").flatMap(Self.number) ?? 0
        return TaskStats(cpuNanoseconds: microseconds &* 1_000, memoryBytes: memory)
    }

    /// `usage_usec N` from a v2 `cpu.stat`.
    static func usageMicroseconds(cpuStat: String) -> UInt64? {
        for line in cpuStat.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count == 2, fields[0] == "usage_usec" { return UInt64(fields[1]) }
        }
        return nil
    }

    /// A file holding one number ("123\n").
    static func number(_ text: String) -> UInt64? {
        UInt64(text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first ?? "")
    }
}
