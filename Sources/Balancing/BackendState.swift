/// What one balancer knows about one backend: the table's entry plus what it has seen (active connections,
/// consecutive failures, ejection). A reference type so that a connection keeps accounting against the backend
/// it was given even after a table update replaces or removes it.
public final class BackendState {
    public internal(set) var backend: Backend
    /// Connections (L4) or requests (L7) in flight through this balancer.
    public internal(set) var active: Int = 0
    /// Connections or requests ever given to it.
    public internal(set) var total: UInt64 = 0
    /// Failures in a row since the last success.
    public internal(set) var consecutiveFailures: Int = 0
    /// Times outlier detection has ejected it.
    public internal(set) var ejections: Int = 0
    /// Ejected until this time (ms); nil when not ejected.
    public internal(set) var ejectedUntilMillis: UInt64?
    /// When it (re)entered service, for slow start.
    public internal(set) var sinceMillis: UInt64
    /// False once a table update removed it: it takes no new connections.
    public internal(set) var inTable: Bool = true

    init(backend: Backend, sinceMillis: UInt64) {
        self.backend = backend
        self.sinceMillis = sinceMillis
    }
}
