import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
public import Glibc
#endif

/// Tells the service manager about the daemon's state over `$NOTIFY_SOCKET`,
/// following sd_notify(3), without libsystemd.
///
/// Each call opens an `AF_UNIX`/`SOCK_DGRAM` socket (close-on-exec), sends one
/// datagram and closes it, so the type holds no state and every function is
/// safe from any thread. (Calls are rare: readiness, status changes, stopping,
/// and a watchdog ping every few seconds.)
///
/// Every function is a no-op returning false when `NOTIFY_SOCKET` is unset or
/// empty (the daemon was not started by systemd with `Type=notify`, or by
/// `NotifyAccess=none`), so callers never need to check first. The environment
/// is read from `environment`, which defaults to this process's; tests inject
/// their own.
///
/// The datagram carries the sender's credentials (the kernel attaches them for
/// a receiver with `SO_PASSCRED`), which is how systemd applies
/// `NotifyAccess=main`: send from the main process, not from a child.
public enum SystemdNotifier {
    /// How long one notification may wait for room in the receiver's queue
    /// before it is given up (the call then returns false).
    public static let sendTimeoutSeconds = 2

    /// Whether `$NOTIFY_SOCKET` is set, i.e. a service manager listens for
    /// notifications (sd_notify(3)).
    public static func isAvailable(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let value = environment["NOTIFY_SOCKET"] else { return false }
        return !value.isEmpty
    }

    /// Sends `state`, newline-separated `KEY=VALUE` assignments such as
    /// "READY=1\nSTATUS=Recording", as one datagram to `$NOTIFY_SOCKET`
    /// (sd_notify(3)).
    ///
    /// `$NOTIFY_SOCKET` is an absolute socket path, or "@name" for the abstract
    /// namespace. Returns true when the whole datagram was sent; false when the
    /// variable is unset or empty, names an unsupported address (a relative
    /// path, `vsock:`), nothing listens there, the receiver's queue stayed
    /// full for `sendTimeoutSeconds`, or `state` is empty. Never raises SIGPIPE.
    @discardableResult
    public static func notify(_ state: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let value = environment["NOTIFY_SOCKET"], !value.isEmpty,
              let address = UnixSocketAddress(notifySocket: value) else { return false }
        let payload = Array(state.utf8)
        guard !payload.isEmpty else { return false }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        // A receiver whose queue is full (net.unix.max_dgram_qlen datagrams
        // unread) blocks the sender; bound that wait instead of hanging.
        var timeout = timeval(tv_sec: Int(sendTimeoutSeconds), tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let sent = try? POSIX.call("sendto") {
            address.withSockaddr { sockaddr, length in
                payload.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sockaddr, length) }
            }
        }
        return sent == payload.count
    }

    /// "READY=1": start-up is finished and the control socket accepts
    /// connections (`Type=notify` units become active only now). Also sends
    /// `STATUS=` when `status` is given and `MAINPID=` (this process, so the
    /// manager tracks the right process even if it was started through a
    /// wrapper). sd_notify(3).
    @discardableResult
    public static func ready(
        status: String? = nil, mainPID: pid_t = getpid(),
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Bool {
        var lines = ["READY=1"]
        if let status { lines.append("STATUS=" + singleLine(status)) }
        lines.append("MAINPID=\(mainPID)")
        return notify(lines.joined(separator: "\n"), environment: environment)
    }

    /// "STOPPING=1": shutdown has begun (the daemon is closing its chunks), with
    /// an optional `STATUS=`. sd_notify(3).
    @discardableResult
    public static func stopping(
        status: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Bool {
        var lines = ["STOPPING=1"]
        if let status { lines.append("STATUS=" + singleLine(status)) }
        return notify(lines.joined(separator: "\n"), environment: environment)
    }

    /// "WATCHDOG=1": the keep-alive ping for `WatchdogSec=`; send it at least
    /// every `watchdogInterval / 2` (sd_notify(3), sd_watchdog_enabled(3)).
    @discardableResult
    public static func watchdog(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        notify("WATCHDOG=1", environment: environment)
    }

    /// "STATUS=...": a one-line, human-readable status that `systemctl status`
    /// shows. Newlines in `text` become spaces. sd_notify(3).
    @discardableResult
    public static func status(_ text: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        notify("STATUS=" + singleLine(text), environment: environment)
    }

    /// "EXTEND_TIMEOUT_USEC=...": asks for `duration` more before the current
    /// start or stop timeout fires (e.g. while closing long chunks during stop).
    /// sd_notify(3).
    @discardableResult
    public static func extendTimeout(
        by duration: Duration, environment: [String: String] = ProcessInfo.processInfo.environment
    ) -> Bool {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return false }
        let usec = seconds.multipliedReportingOverflow(by: 1_000_000)
        guard !usec.overflow else { return false }
        return notify("EXTEND_TIMEOUT_USEC=\(usec.partialValue + attoseconds / 1_000_000_000_000)", environment: environment)
    }

    /// The service's watchdog timeout, following sd_watchdog_enabled(3): from
    /// `WATCHDOG_USEC` (a positive number of microseconds), or nil when it is
    /// unset, zero, infinite or not a number, or when `WATCHDOG_PID` is set
    /// and is not this process (the watchdog is meant for another process) or
    /// not a number. Ping with `watchdog()` at half this interval or more often.
    ///
    /// With `unsetEnvironment`, `WATCHDOG_USEC` and `WATCHDOG_PID` are removed
    /// from the process environment (unsetenv(3)), as sd_watchdog_enabled does,
    /// so that children do not inherit them. unsetenv is not thread-safe: do it
    /// at start-up, before other threads read the environment.
    public static func watchdogInterval(
        environment: [String: String] = ProcessInfo.processInfo.environment, unsetEnvironment: Bool = false
    ) -> Duration? {
        defer {
            if unsetEnvironment {
                unsetenv("WATCHDOG_USEC")
                unsetenv("WATCHDOG_PID")
            }
        }
        guard let usecText = environment["WATCHDOG_USEC"], let usec = parseDecimal(usecText),
              usec > 0, usec != UInt64.max, usec <= UInt64(Int64.max) else { return nil }
        if let pidText = environment["WATCHDOG_PID"] {
            guard let pid = parseDecimal(pidText), pid > 0, pid == UInt64(getpid()) else { return nil }
        }
        return .microseconds(Int64(usec))
    }

    private static func singleLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }
}

/// A non-negative decimal number without sign, spaces or other characters
/// (as systemd's safe_atou64/parse_pid accept in practice).
func parseDecimal(_ text: String) -> UInt64? {
    guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
    return UInt64(text)
}
