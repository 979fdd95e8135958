#if canImport(Glibc)
public import Glibc
#endif
public import CaptureCore

/// A system call that failed, with the errno it left (kept at the failure, before
/// anything else could overwrite it).
public struct SystemCallError: Error, Sendable, Equatable, CustomStringConvertible {
    public var call: String
    public var errno: Int32

    public init(_ call: String, errno: Int32) {
        self.call = call
        self.errno = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }

    /// As a CaptureError (IO_ERROR) that says what was being done.
    public func captureError(_ doing: String) -> CaptureError {
        CaptureError(.ioError, "\(doing): \(self)")
    }
}

/// The one place that knows how POSIX calls fail: EINTR is retried, EAGAIN /
/// EWOULDBLOCK on a non-blocking descriptor is "not now" (nil), anything else
/// throws with its errno. Socket and file code calls through here instead of
/// writing its own retry loop.
public enum POSIX {
    /// Runs `body` until it does not fail with EINTR. A negative result throws.
    @inlinable
    public static func call<T: BinaryInteger>(_ name: String, _ body: () -> T) throws(SystemCallError) -> T {
        while true {
            let result = body()
            if result >= 0 { return result }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemCallError(name, errno: e)
        }
    }

    /// Like `call`, for non-blocking descriptors: nil when the call would block.
    @inlinable
    public static func nonBlocking<T: BinaryInteger>(_ name: String, _ body: () -> T) throws(SystemCallError) -> T? {
        while true {
            let result = body()
            if result >= 0 { return result }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemCallError(name, errno: e)
        }
    }

    /// Writes every byte (a blocking descriptor), retrying short writes.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SystemCallError) {
        var done = 0
        while done < bytes.count {
            done += try call("write") { Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done) }
        }
    }

    /// Reads until `buffer` is full or the end of the file; returns the bytes read.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemCallError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try call("read") { Glibc.read(fd, buffer.baseAddress! + done, buffer.count - done) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Opens `path`; the descriptor is close-on-exec.
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(SystemCallError) -> Int32 {
        try call("open \(path)") { Glibc.open(path, flags | O_CLOEXEC, mode) }
    }
}
