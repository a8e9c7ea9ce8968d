// The Echo service of proto/flotilla/v1/health.proto served and called with grpc-swift-2, written by
// hand (no protoc plugin): the same method names, the same generated messages (module Wire), the same
// handler bodies as Flotilla's DiagnosticsService.
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf
import PKI
import Wire

enum GRPCEcho {
    static let service = ServiceDescriptor(fullyQualifiedService: "flotilla.v1.Echo")
    static let echo = MethodDescriptor(service: service, method: "Echo", type: .unary)
    static let expand = MethodDescriptor(service: service, method: "Expand", type: .serverStreaming)
}

/// Server side: Echo/Echo (unary) and Echo/Expand (server streaming), as in DiagnosticsService.
struct GRPCEchoService: RegistrableRPCService {
    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(
            forMethod: GRPCEcho.echo,
            deserializer: ProtobufDeserializer<Flotilla_V1_EchoRequest>(),
            serializer: ProtobufSerializer<Flotilla_V1_EchoResponse>()
        ) { stream, _ in
            let request = try await ServerRequest(stream: stream)
            var response = Flotilla_V1_EchoResponse()
            response.payload = request.message.payload
            return StreamingServerResponse(single: ServerResponse(message: response))
        }
        router.registerHandler(
            forMethod: GRPCEcho.expand,
            deserializer: ProtobufDeserializer<Flotilla_V1_EchoRequest>(),
            serializer: ProtobufSerializer<Flotilla_V1_EchoResponse>()
        ) { stream, _ in
            let request = try await ServerRequest(stream: stream)
            return StreamingServerResponse { writer in
                for sequence in 0..<request.message.repeat {
                    var response = Flotilla_V1_EchoResponse()
                    response.payload = request.message.payload
                    response.sequence = sequence
                    try await writer.write(response)
                }
                return [:]
            }
        }
    }
}

enum GRPCSide {
    /// Server TLS: the server's chain and key, client certificates required and verified against the
    /// cluster CA (no hostname check), as Flotilla's TLSContexts.server does.
    static func serverSecurity(_ credentials: Credentials) throws -> HTTP2ServerTransport.Posix.TransportSecurity {
        let chain: [TLSConfig.CertificateSource] = [.bytes(try credentials.certificateDER, format: .der)]
        let ca: [TLSConfig.CertificateSource] = [.bytes(try credentials.caCertificateDER, format: .der)]
        return .mTLS(certificateChain: chain, privateKey: .bytes(credentials.privateKeyDER, format: .der)) { tls in
            tls.trustRoots = .certificates(ca)
            tls.clientCertificateVerification = .noHostnameVerification
        }
    }

    /// Client TLS: presents its certificate, trusts only the cluster CA, no hostname check (as Flotilla).
    static func clientSecurity(_ credentials: Credentials) throws -> HTTP2ClientTransport.Posix.TransportSecurity {
        let chain: [TLSConfig.CertificateSource] = [.bytes(try credentials.certificateDER, format: .der)]
        let ca: [TLSConfig.CertificateSource] = [.bytes(try credentials.caCertificateDER, format: .der)]
        return .mTLS(certificateChain: chain, privateKey: .bytes(credentials.privateKeyDER, format: .der)) { tls in
            tls.trustRoots = .certificates(ca)
            tls.serverCertificateVerification = .noHostnameVerification
        }
    }

    /// Runs a gRPC server on 127.0.0.1 (free port), calls `ready` with the port, and serves until `stop`
    /// returns.
    static func serve(
        credentials: Credentials, flushCoalescing: Bool,
        ready: @Sendable (Int) -> Void, until stop: @Sendable () async -> Void
    ) async throws {
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: "127.0.0.1", port: 0),
            transportSecurity: try serverSecurity(credentials),
            config: .defaults { if !flushCoalescing { $0.connection.flushCoalescing = nil } })
        let server = GRPCServer(transport: transport, services: [GRPCEchoService()])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            guard let port = try await transport.listeningAddress.ipv4?.port else {
                throw BenchError("gRPC server has no IPv4 listening address")
            }
            ready(port)
            await stop()
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
    }

    /// Connects one client (one HTTP/2 connection: a single address, pick-first) and runs `body` with it.
    static func withClient<R: Sendable>(
        port: Int, credentials: Credentials, flushCoalescing: Bool, _ body: (GRPCEchoTarget) async throws -> R
    ) async throws -> R {
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: "127.0.0.1", port: port),
            transportSecurity: try clientSecurity(credentials),
            config: .defaults { if !flushCoalescing { $0.connection.flushCoalescing = nil } })
        return try await withGRPCClient(transport: transport) { client in
            try await body(GRPCEchoTarget(client: client))
        }
    }
}

struct GRPCEchoTarget: EchoTarget {
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    var name: String { "grpc-swift-2" }

    func unary(_ request: Flotilla_V1_EchoRequest) async throws -> Int {
        try await client.unary(
            request: ClientRequest(message: request),
            descriptor: GRPCEcho.echo,
            serializer: ProtobufSerializer<Flotilla_V1_EchoRequest>(),
            deserializer: ProtobufDeserializer<Flotilla_V1_EchoResponse>(),
            options: .defaults
        ) { response in
            try response.message.payload.count
        }
    }

    func expand(_ request: Flotilla_V1_EchoRequest) async throws -> (messages: Int, bytes: Int) {
        try await client.serverStreaming(
            request: ClientRequest(message: request),
            descriptor: GRPCEcho.expand,
            serializer: ProtobufSerializer<Flotilla_V1_EchoRequest>(),
            deserializer: ProtobufDeserializer<Flotilla_V1_EchoResponse>(),
            options: .defaults
        ) { response in
            var messages = 0
            var bytes = 0
            for try await message in response.messages {
                messages += 1
                bytes += message.payload.count
            }
            return (messages, bytes)
        }
    }
}
