#if canImport(Glibc)
import Glibc
#endif
public import CaptureCore

/// A directory into which files are published atomically: written to a
/// hidden temporary name, fsync'ed, renamed into place, and the directory
/// fsync'ed, so after a crash a file is either absent or complete.
public final class AtomicDirectory {
    public let path: String
    private let fd: Int32

    /// Opens (creating with mode 0700 as needed, parents included) `path`.
    public init(creating path: String) throws(CaptureError) {
        try makeDirectories(path)
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw ioError("cannot open directory \(path)") }
        self.path = path
        self.fd = fd
    }

    deinit { close(fd) }

    /// Writes `bytes` as `name`, atomically and durably (call `sync()` to make the
    /// rename durable too). `writer` makes the temporary name unique to one of
    /// several writers that may publish the same name at once.
    public func publish(_ name: String, bytes: UnsafeRawBufferPointer, writer: String? = nil) throws(CaptureError) {
        let temporary = writer.map { ".\(name).\($0).tmp" } ?? ".\(name).tmp"
        let out = openat(fd, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw ioError("cannot create \(path)/\(temporary)") }
        do {
            try POSIX.writeAll(out, bytes)
        } catch {
            close(out)
            unlinkat(fd, temporary, 0)
            throw error.captureError("cannot write \(path)/\(temporary)")
        }
        if fsync(out) != 0 {
            let e = ioError("cannot fsync \(path)/\(temporary)")
            close(out)
            unlinkat(fd, temporary, 0)
            throw e
        }
        close(out)
        if let pause = Self.testPauseBeforeRename, pause == name { Self.testOnlyPause(in: fd, name: name) }
        guard renameat(fd, temporary, fd, name) == 0 else {
            let e = ioError("cannot rename \(temporary) to \(name) in \(path)")
            unlinkat(fd, temporary, 0)
            throw e
        }
    }

    public func publish(_ name: String, string: String) throws(CaptureError) {
        let bytes = Array(string.utf8)
        var failure: CaptureError?
        bytes.withUnsafeBytes { raw in
            do throws(CaptureError) { try publish(name, bytes: raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Fault injection for tests: `CAPTURE_AGENT_TEST_PAUSE_BEFORE_RENAME=<name>` stops the
    /// writer of a file of that name after its bytes are written and fsync'ed under the
    /// temporary name and before the rename, once it has created `.<name>.paused` beside it:
    /// a test kills the process there, inside a write, instead of hoping a timed kill lands
    /// in one. Read once; a string compare per published file otherwise.
    private static let testPauseBeforeRename: String? = getenv("CAPTURE_AGENT_TEST_PAUSE_BEFORE_RENAME").map { String(cString: $0) }

    private static func testOnlyPause(in directory: Int32, name: String) -> Never {
        close(openat(directory, ".\(name).paused", O_WRONLY | O_CREAT | O_CLOEXEC, 0o600))
        while true { sleep(3600) }
    }

    /// Makes every rename so far durable.
    public func sync() throws(CaptureError) {
        guard fsync(fd) == 0 else { throw ioError("cannot fsync directory \(path)") }
    }

    public func remove(_ name: String) throws(CaptureError) {
        guard unlinkat(fd, name, 0) == 0 || errno == ENOENT else { throw ioError("cannot remove \(path)/\(name)") }
    }
}

private func ioError(_ what: String) -> CaptureError {
    CaptureError(.ioError, "\(what): \(String(cString: strerror(errno)))")
}

/// `mkdir -p` with mode 0700 for the directories it creates.
public func makeDirectories(_ path: String) throws(CaptureError) {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/", omittingEmptySubsequences: true) {
        current += "/" + component
        if mkdir(current, 0o700) != 0 && errno != EEXIST {
            throw ioError("cannot create directory \(current)")
        }
    }
    var st = stat()
    guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
        throw CaptureError(.ioError, "\(path) is not a directory")
    }
    guard access(path, W_OK | X_OK) == 0 else { throw ioError("cannot write into \(path)") }
}
