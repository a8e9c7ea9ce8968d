/// Versions of what the store reads and writes. Raise them when the store learns something an older
/// controller could not understand; an older controller then refuses, by name, rather than misapply.
public enum StoreVersion {
    /// The command set this build applies: raised with every new command, and every new field of a command.
    /// Named in the error a controller gives when it meets a command from a newer Flotilla. 5: ServiceScale,
    /// EventAppend and every command's proposed_at_ms.
    public static let commandSet: UInt32 = 5

    /// The `ClusterSnapshot.format_version` this build writes: raised whenever the snapshot gains a field.
    public static let snapshotFormat: UInt32 = 5

    /// Every snapshot format this build can read.
    public static let readableSnapshotFormats: ClosedRange<UInt32> = 1...5
}
