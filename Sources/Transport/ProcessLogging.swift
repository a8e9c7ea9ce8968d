public import Logging

/// Logging for Flotilla's processes: swift-log to standard error at the level `--log-level` chose.
public enum ProcessLogging {
    public static func bootstrap(level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
