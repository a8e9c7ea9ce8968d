/// Tuning that applies to every backend of one service's balancer.
public struct BalancingOptions: Sendable, Equatable {
    /// Consecutive failures (connect errors, resets before a response, 5xx-less timeouts) that eject a backend;
    /// 0 turns outlier detection off. Default 3.
    public var ejectAfterFailures: Int
    /// First ejection lasts this long (default 5 s); each further ejection of the same backend doubles it, up to
    /// `maxEjectionMillis` (default 300 s). A backend forgiven (a success after staying in service twice as long
    /// as its last ejection lasted) starts again from the base.
    public var baseEjectionMillis: UInt64
    public var maxEjectionMillis: UInt64
    /// A new backend (or one back from ejection) ramps its effective weight from 10% to 100% over this period; 0 =
    /// off for new backends, while one back from ejection still ramps, over `baseEjectionMillis`. Default 0.
    public var slowStartMillis: UInt64
    /// Prefer backends on this balancer's node while any of them can take the connection. Default off.
    public var preferLocal: Bool
    /// Entries in ip-hash's Maglev table, rounded up to a prime; it should be well above 100 × the backends for
    /// even shares. Default 65,537 (128 KiB per balancer, built only for ip-hash).
    public var hashTableSize: Int

    public init(ejectAfterFailures: Int = 3, baseEjectionMillis: UInt64 = 5_000, maxEjectionMillis: UInt64 = 300_000,
                slowStartMillis: UInt64 = 0, preferLocal: Bool = false, hashTableSize: Int = 65_537) {
        self.ejectAfterFailures = ejectAfterFailures
        self.baseEjectionMillis = baseEjectionMillis
        self.maxEjectionMillis = maxEjectionMillis
        self.slowStartMillis = slowStartMillis
        self.preferLocal = preferLocal
        self.hashTableSize = hashTableSize
    }
}
