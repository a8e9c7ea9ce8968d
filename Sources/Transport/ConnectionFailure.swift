import NIOCore
import NIOPosix
import NIOSSL
import Wire

/// Turns what NIO and BoringSSL report on a failed connection into a message a person can act on.
enum ConnectionFailure {
    static func describe(_ error: any Error, host: String, port: Int) -> RPCError {
        if let error = error as? RPCError { return error }
        let text = "\(error)"
        let target = "\(host):\(port)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return RPCError(
                .unauthenticated,
                "\(target) presented a certificate that the CA in your credentials did not issue (another cluster?) or that has expired")
        }
        if text.contains("CERTIFICATE_REQUIRED") || text.contains("ALERT_UNKNOWN_CA") || text.contains("ALERT_BAD_CERTIFICATE")
            || text.contains("ALERT_CERTIFICATE_EXPIRED") || text.contains("ALERT_HANDSHAKE_FAILURE") {
            return RPCError(
                .unauthenticated,
                "\(target) refused our certificate: it was issued by another cluster's CA, has expired, or is missing")
        }
        if text.contains("PROTOCOL_VERSION") || text.contains("UNSUPPORTED_PROTOCOL") {
            return RPCError(.unauthenticated, "\(target) and this client share no TLS version (TLS 1.2 or newer is required)")
        }
        if text.contains("Connection refused") {
            return RPCError(.unavailable, "nothing is listening on \(target) (connection refused); is the controller running there?")
        }
        if error is ChannelError, case .connectTimeout = error as! ChannelError {
            return RPCError(.unavailable, "\(target) did not accept the connection in time")
        }
        if text.contains("No route to host") || text.contains("Network is unreachable") {
            return RPCError(.unavailable, "\(target) is unreachable from here (\(text))")
        }
        return RPCError(.unavailable, "could not connect to \(target): \(text)")
    }
}
