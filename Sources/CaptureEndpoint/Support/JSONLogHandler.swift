import CaptureCore
import Foundation
public import Logging
import Synchronization

/// Structured logs: one JSON object per line on stderr, with `ts`, `level`,
/// `msg`, the logger's label and every metadata key as a field. Values are
/// written as strings, so a log reader needs no schema per message.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    private let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        for (key, value) in metadata { fields[key] = "\(value)" }
        for (key, value) in event.metadata ?? [:] { fields[key] = "\(value)" }
        fields["ts"] = WallClock.iso8601(nanoseconds: WallClock.now())
        fields["level"] = event.level.rawValue
        fields["msg"] = "\(event.message)"
        fields["logger"] = label
        let data = (try? Self.encoder.encode(fields)) ?? Data(#"{"msg":"unencodable log line"}"#.utf8)
        Self.output.withLock { handle in
            handle.write(data + Data([0x0a]))
        }
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// One writer at a time, so lines never interleave.
    private static let output = Mutex(FileHandle.standardError)
}
