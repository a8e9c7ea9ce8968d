import ClusterModel
import PKI
import Transport
import Wire

/// The admin API a controller serves to the `flotilla` CLI.
struct AdminService: Sendable {
    let credentials: Credentials
    let listenAddress: String
    let startedAt: ContinuousClock.Instant

    func register(into router: inout RPCRouter) {
        router.register(Methods.adminStatus) { _, _ in status() }
    }

    func status() -> Flotilla_V1_StatusResponse {
        var response = Flotilla_V1_StatusResponse()
        response.controllerID = credentials.identity.nodeID.rawValue
        response.version = FlotillaVersion.current
        let uptime = ContinuousClock.now - startedAt
        response.uptimeSeconds = Double(uptime.components.seconds) + Double(uptime.components.attoseconds) / 1e18
        response.protocolVersion = ProtocolVersion.current
        response.clusterID = credentials.clusterID
        response.listenAddress = listenAddress
        return response
    }
}

