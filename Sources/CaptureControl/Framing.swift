/// The line framing of the control protocol: every message is one line
///
///     videodb_recorder|<one JSON object>\n
///
/// on a Unix stream socket or on stdin/stdout. `\r\n` is accepted, empty
/// lines are ignored, a line longer than `maxLineBytes` is an error.
public enum ControlFraming {
    public static let prefix = "videodb_recorder|"
    public static let prefixBytes = Array(prefix.utf8)
    /// Longest accepted line, prefix and JSON included, newline excluded (1 MiB).
    public static let maxLineBytes = 1 << 20

    /// `prefix + json + "\n"` as bytes.
    public static func frame(_ json: some Sequence<UInt8>) -> [UInt8] {
        var out = prefixBytes
        out.append(contentsOf: json)
        out.append(0x0A)
        return out
    }
}

/// Splits a byte stream into lines, never holding more than `maxLineBytes`
/// of one line: the rest of an oversized line is skipped and reported once.
/// A value type owned by one connection; not thread-safe by itself.
public struct LineSplitter: Sendable {
    public enum Event: Sendable, Equatable {
        /// A complete line without its terminator (`\n` or `\r\n`).
        case line([UInt8])
        /// A line exceeded the cap; `bytes` is how long it was (counted up to its newline).
        case oversized(bytes: Int)
    }

    public let maxLineBytes: Int
    private var buffer: [UInt8] = []
    private var skipping = false
    private var skippedBytes = 0

    public init(maxLineBytes: Int = ControlFraming.maxLineBytes) {
        self.maxLineBytes = maxLineBytes
        buffer.reserveCapacity(4096)
    }

    /// Bytes of an incomplete line held so far.
    public var pendingBytes: Int { skipping ? 0 : buffer.count }

    /// Feeds bytes; calls `handle` for each complete line (or oversized one), in order.
    public mutating func append(_ bytes: UnsafeRawBufferPointer, _ handle: (Event) -> Void) {
        var start = 0
        let count = bytes.count
        while start < count {
            var newline = -1
            var i = start
            while i < count {
                if bytes[i] == 0x0A { newline = i; break }
                i += 1
            }
            let end = newline >= 0 ? newline : count
            let piece = UnsafeRawBufferPointer(rebasing: bytes[start..<end])
            if skipping {
                skippedBytes += piece.count
            } else if buffer.count + piece.count > maxLineBytes + 1 {
                // +1 tolerates the '\r' of a "\r\n" terminator.
                skipping = true
                skippedBytes = buffer.count + piece.count
                buffer.removeAll(keepingCapacity: buffer.capacity <= 65536)
            } else {
                buffer.append(contentsOf: piece)
            }
            if newline < 0 { break }
            if skipping {
                handle(.oversized(bytes: skippedBytes))
                skipping = false
                skippedBytes = 0
            } else {
                if buffer.last == 0x0D { buffer.removeLast() }
                if buffer.count > maxLineBytes {
                    handle(.oversized(bytes: buffer.count))
                } else if !buffer.isEmpty {
                    handle(.line(buffer))
                }
                buffer.removeAll(keepingCapacity: buffer.capacity <= 65536)
            }
            start = newline + 1
        }
        // A line that is already over the cap before its newline arrives is
        // reported as soon as it ends; meanwhile nothing more is stored.
    }

    /// Feeds bytes from an array (tests, small writes).
    public mutating func append(_ bytes: [UInt8], _ handle: (Event) -> Void) {
        bytes.withUnsafeBytes { append($0, handle) }
    }
}
