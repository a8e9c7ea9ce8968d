@testable import ContainerRuntime
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ProcFileTests {
    @Test func aProcFileLongerThanOnePageIsReadWhole() throws {
        // 100 listening sockets make /proc/self/net/tcp about 15 KiB: Foundation's reader stops after 4 KiB.
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<100 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, "127.0.0.1", &address.sin_addr)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            listen(fd, 1)
            sockets.append(fd)
        }
        let table = try #require(ProcFile.read("/proc/self/net/tcp"))
        let listening = table.split(separator: "\n").filter { $0.split(separator: " ").dropFirst(3).first == "0A" }
        #expect(table.utf8.count > 4096)
        #expect(listening.count >= 100, "every listening socket is in the table: \(listening.count)")
    }
}
