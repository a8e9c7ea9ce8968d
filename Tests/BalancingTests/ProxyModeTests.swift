import Balancing
import Testing

@Suite struct ProxyModeTests {
    @Test func namesParseAndUnknownOnesAreRefused() {
        #expect(ProxyMode(named: "TCP") == .tcp)
        #expect(ProxyMode(named: "l7") == .http)
        #expect(ProxyMode(named: "udp") == nil)
    }
}
