import Balancing
import Testing

@Suite struct ClientHashTests {
    @Test func theSameAddressHashesTheSameAndNeighboursDiffer() {
        let a = ClientHash.of([10, 0, 0, 1] as [UInt8])
        #expect(a == ClientHash.of([10, 0, 0, 1] as [UInt8]))
        #expect(a != ClientHash.of([10, 0, 0, 2] as [UInt8]))
    }
}
