import ContainerRuntime
import Testing

/// What a drain waits for: the connections a container's network namespace still serves.
@Suite("Connections a network namespace serves")
struct NetworkNamespaceTests {
    // /proc/net/tcp as a container shows it: httpd listening on 8080 (0x1F90), two balancers' connections to it
    // (one established, one the client has closed but the server not yet), one in TIME_WAIT, a connection the
    // container made itself to a database on 5432 (0x1538), and the client end of a loopback connection.
    static let table = """
          sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
           0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1538 1 0 100 0 0 10 0
           1: 0AF00002:1F90 0A4E4E0C:9C40 01 00000000:00000000 00:00000000 00000000     0        0 6113 1 0 20 4 30 10 -1
           2: 0AF00002:1F90 0A4E4E0D:9C41 08 00000000:00000000 00:00000000 00000000     0        0 6114 1 0 20 4 30 10 -1
           3: 0AF00002:1F90 0A4E4E0D:9C42 06 00000000:00000000 03:00000F9E 00000000     0        0 0 3 0
           4: 0AF00002:A000 0AF00009:1538 01 00000000:00000000 00:00000000 00000000     0        0 6115 1 0 20 4 30 10 -1
           5: 0100007F:82C6 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 6116 1 0 20 4 30 10 -1
        """

    @Test("connections accepted on a listening port count while established or owed an answer; its own outgoing ones and closed ones don't")
    func countsServedConnections() {
        // Row 5's server end would be on 8080 too; alone, its client end (port 0x82C6, not listening) doesn't count.
        #expect(NetworkNamespace.servedConnections(in: Self.table) == 2)
    }

    @Test("a namespace with only a listener serves nothing")
    func listenerAlone() {
        let listener = Self.table.split(separator: "\n").prefix(2).joined(separator: "\n")
        #expect(NetworkNamespace.servedConnections(in: listener) == 0)
    }
}
