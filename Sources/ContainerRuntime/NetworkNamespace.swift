import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Entering a network namespace from Swift, and what a namespace's sockets show.
///
/// `setns` moves only the calling thread, and a socket belongs to the namespace of the thread that creates it;
/// so work inside a namespace runs on a thread of its own that ends with it, and nothing else changes namespace.
public enum NetworkNamespace {
    /// Moves the calling thread into the network namespace open at `descriptor` (a /run/netns/NAME file);
    /// false with errno set if the kernel refused. setns(2) is not in Swift's Glibc module, so it is looked up.
    public static func enter(descriptor: Int32) -> Bool {
        typealias SetnsFunction = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "setns") else { return false }
        let setns = unsafeBitCast(symbol, to: SetnsFunction.self)
        return setns(descriptor, 0x4000_0000 /* CLONE_NEWNET */) == 0
    }

    /// The TCP connections the namespace at `path` serves (see `servedConnections(in:)`), read on a thread of its
    /// own inside it; nil if it cannot be entered or read (it is gone, or the caller is not root).
    public static func servedConnections(at path: String) async -> Int? {
        await withCheckedContinuation { continuation in
            Thread {
                let descriptor = open(path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0 else { return continuation.resume(returning: nil) }
                defer { close(descriptor) }
                guard enter(descriptor: descriptor) else { return continuation.resume(returning: nil) }
                // thread-self: this thread's namespace (/proc/self/net is the main thread's).
                let tables = ["tcp", "tcp6"].compactMap { ProcFile.read("/proc/thread-self/net/" + $0) }
                continuation.resume(returning: tables.isEmpty ? nil : servedConnections(in: tables.joined(separator: "\n")))
            }.start()
        }
    }

    /// Counts, in /proc/net/tcp text, the connections accepted on a listening port: local port held by a listener,
    /// state established, being set up, or closed only by the peer (the server still owes it). A container's count
    /// takes in every connection to it, from whichever node's load balancer; its own outgoing ones don't count.
    public static func servedConnections(in table: String) -> Int {
        var listening: Set<Substring> = []
        var open: [Substring] = []
        for line in table.split(separator: "\n") {
            // "sl local_address rem_address st ...": addresses are HEX_IP:HEX_PORT, st is the state in hex.
            let fields = line.split(separator: " ")
            guard fields.count > 3, let colon = fields[1].lastIndex(of: ":") else { continue }
            let port = fields[1][fields[1].index(after: colon)...]
            switch fields[3] {
            case "0A": listening.insert(port)  // LISTEN
            case "01", "03", "08": open.append(port)  // ESTABLISHED, SYN_RECV, CLOSE_WAIT
            default: break
            }
        }
        return open.count { listening.contains($0) }
    }
}
