#if canImport(Glibc)
import Glibc
#endif

/// Standard output and standard error, written straight to their descriptors:
/// unbuffered (as FileHandle wrote them), so a line is out before the process
/// exits or is killed, and without Foundation's FileHandle.
public enum StandardStream: Sendable {
    case output
    case error

    public var fileDescriptor: Int32 {
        switch self {
        case .output: STDOUT_FILENO
        case .error: STDERR_FILENO
        }
    }

    /// Writes all of `text` (UTF-8). A failed write is dropped: there is nowhere
    /// left to report it.
    public func write(_ text: String) {
        var text = text
        text.withUTF8 { write(UnsafeRawBufferPointer($0)) }
    }

    /// Writes all of `bytes`; a failed write is dropped.
    public func write(_ bytes: some Sequence<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { write(UnsafeRawBufferPointer($0)) }
        if done == nil {
            let copy = Array(bytes)
            copy.withUnsafeBytes { write($0) }
        }
    }

    private func write(_ raw: UnsafeRawBufferPointer) {
        guard raw.count > 0 else { return }
        try? POSIX.writeAll(fileDescriptor, raw)
    }
}
