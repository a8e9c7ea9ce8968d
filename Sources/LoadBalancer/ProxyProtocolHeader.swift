public import NIOCore

/// PROXY protocol version 2 (HAProxy's spec, section 2.2): a binary header sent first on a backend connection
/// so the backend learns the client's address and the address it connected to.
public enum ProxyProtocolHeader {
    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    /// The header for a TCP connection from `source` to `destination`; a LOCAL header (no addresses) when they
    /// are not both IPv4 or both IPv6.
    public static func encode(source: SocketAddress?, destination: SocketAddress?) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeBytes(signature)
        switch (source, destination) {
        case (.v4(let from)?, .v4(let to)?):
            buffer.writeInteger(UInt8(0x21))  // version 2, PROXY
            buffer.writeInteger(UInt8(0x11))  // TCP over IPv4
            buffer.writeInteger(UInt16(12))
            _ = withUnsafeBytes(of: from.address.sin_addr.s_addr) { buffer.writeBytes($0) }
            _ = withUnsafeBytes(of: to.address.sin_addr.s_addr) { buffer.writeBytes($0) }
            buffer.writeInteger(UInt16(bigEndian: from.address.sin_port))
            buffer.writeInteger(UInt16(bigEndian: to.address.sin_port))
        case (.v6(let from)?, .v6(let to)?):
            buffer.writeInteger(UInt8(0x21))
            buffer.writeInteger(UInt8(0x21))  // TCP over IPv6
            buffer.writeInteger(UInt16(36))
            _ = withUnsafeBytes(of: from.address.sin6_addr) { buffer.writeBytes($0) }
            _ = withUnsafeBytes(of: to.address.sin6_addr) { buffer.writeBytes($0) }
            buffer.writeInteger(UInt16(bigEndian: from.address.sin6_port))
            buffer.writeInteger(UInt16(bigEndian: to.address.sin6_port))
        default:
            buffer.writeInteger(UInt8(0x20))  // version 2, LOCAL
            buffer.writeInteger(UInt8(0x00))
            buffer.writeInteger(UInt16(0))
        }
        return buffer
    }
}
