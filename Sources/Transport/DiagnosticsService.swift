import Wire

/// Health and Echo: every process serves them (liveness checks, protocol tests and benchmarks).
public enum DiagnosticsService {
    public static func register(into router: inout RPCRouter) {
        router.register(Methods.healthCheck) { _, _ in
            var response = Flotilla_V1_HealthCheckResponse()
            response.status = .serving
            return response
        }
        router.register(Methods.echo) { request, _ in
            if request.delayMillis > 0 { try await Task.sleep(for: .milliseconds(Int(request.delayMillis))) }
            var response = Flotilla_V1_EchoResponse()
            response.payload = request.payload
            return response
        }
        router.register(Methods.echoExpand) { request, writer, _ in
            for sequence in 0..<request.repeat {
                if request.delayMillis > 0 { try await Task.sleep(for: .milliseconds(Int(request.delayMillis))) }
                var response = Flotilla_V1_EchoResponse()
                response.payload = request.payload
                response.sequence = sequence
                try await writer.write(response)
            }
        }
        router.register(Methods.echoChat) { requests, writer, _ in
            var sequence: UInt32 = 0
            for try await request in requests {
                if request.delayMillis > 0 { try await Task.sleep(for: .milliseconds(Int(request.delayMillis))) }
                var response = Flotilla_V1_EchoResponse()
                response.payload = request.payload
                response.sequence = sequence
                sequence += 1
                try await writer.write(response)
            }
        }
    }
}
