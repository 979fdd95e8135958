internal import CLinuxShims
public import CaptureCore
#if canImport(Glibc)
import Glibc
#endif

/// A wake-up another thread can give a thread that waits on the session bus (or on nothing
/// else): an eventfd its poll(2) includes. `signal()` from any thread; the waiting thread
/// `drain()`s it before looking at what it was woken for.
public final class Wakeup: Sendable {
    let fd: Int32

    public init() throws(CaptureError) {
        let fd = clinux_eventfd_nonblocking()
        guard fd >= 0 else {
            throw CaptureError(.internalError, "cannot create an eventfd: \(String(cString: strerror(errno)))")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Wakes the waiter (a signal before it waits is not lost: it returns at once).
    public func signal() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Forgets the signals so far.
    public func drain() {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }

    /// Sleeps until `signal()` (or a signal already given).
    public func wait() {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&p, 1, -1) < 0 && errno == EINTR {}
    }
}
