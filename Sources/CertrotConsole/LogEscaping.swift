import CertrotCore
import Logging

/// A log handler that writes through `inner` with every character that could forge or disguise a log line shown
/// escaped: in the message and in every metadata value, which is where peers' words (device IDs, jtis, reasons,
/// campaign names) reach the log. One place for every line, rather than a helper each call site must remember
/// (red-team #32, finding 5).
public struct EscapingLogHandler<Inner: LogHandler>: LogHandler {
    public var inner: Inner

    public init(_ inner: Inner) { self.inner = inner }

    public var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    public func log(
        level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
        function: String, line: UInt
    ) {
        inner.log(
            level: level, message: "\(VisibleText.escaped(message.description))",
            metadata: metadata?.mapValues(LogText.escaped), source: source, file: file, function: function, line: line)
    }
}

enum LogText {
    static func escaped(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(VisibleText.escaped(text))
        case .stringConvertible(let item): .string(VisibleText.escaped(item.description))
        case .array(let items): .array(items.map(escaped))
        case .dictionary(let items): .dictionary(items.mapValues(escaped))
        }
    }
}
