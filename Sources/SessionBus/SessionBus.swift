internal import CSDBus
public import CaptureCore
#if canImport(Glibc)
import Glibc
#endif

/// A connection to the user's D-Bus session bus (sd-bus of libsystemd), where the desktop's
/// portals and the compositor answer.
///
/// Owned by one thread (not Sendable): sd-bus objects are not thread-safe, and needs no main
/// loop: `wait(until:wakeFD:)` polls the bus's descriptor (and an optional wake-up descriptor
/// of the owner's) and dispatches what arrived to the signal handlers.
public final class SessionBus {
    private let bus: OpaquePointer
    /// The unique name the bus gave us (":1.42").
    public let uniqueName: String
    private var matches: [SignalMatch] = []
    private var nextMatchToken = 0
    private let owner = ThreadOwner()

    /// Connects to `$DBUS_SESSION_BUS_ADDRESS` (or `$XDG_RUNTIME_DIR/bus`).
    public init() throws(CaptureError) {
        var bus: OpaquePointer?
        let rc = sd_bus_open_user(&bus)
        guard rc >= 0, let bus else {
            throw CaptureError(.displayUnavailable,
                "cannot connect to the D-Bus session bus: \(Self.describe(errno: -rc)); the desktop's screen-sharing portal is reached there (is DBUS_SESSION_BUS_ADDRESS set? under systemd: systemctl --user import-environment DBUS_SESSION_BUS_ADDRESS)")
        }
        self.bus = bus
        var name: UnsafePointer<CChar>?
        if sd_bus_get_unique_name(bus, &name) >= 0, let name {
            uniqueName = String(cString: name)
        } else {
            uniqueName = ""
        }
    }

    deinit {
        for match in matches { sd_bus_slot_unref(match.slot) }
        sd_bus_flush_close_unref(bus)
    }

    // MARK: Calls

    /// Calls a method and waits for its reply (at most `timeoutNs`). A D-Bus error reply
    /// throws with its name and text.
    public func call(_ destination: String, _ path: String, _ interface: String, _ member: String,
                     timeoutNs: Int64 = 25_000_000_000,
                     arguments: (inout DBusMessageWriter) throws(CaptureError) -> Void = { _ throws(CaptureError) in }) throws(CaptureError) -> DBusMessage {
        owner.check()
        var message: OpaquePointer?
        var rc = sd_bus_message_new_method_call(bus, &message, destination, path, interface, member)
        guard rc >= 0, let message else {
            throw CaptureError(.internalError, "cannot make a D-Bus call \(interface).\(member): \(Self.describe(errno: -rc))")
        }
        let request = DBusMessage(owning: message)
        var writer = DBusMessageWriter(message: message)
        try arguments(&writer)
        try writer.finish()
        var error = sd_bus_error()
        defer { sd_bus_error_free(&error) }
        var reply: OpaquePointer?
        rc = sd_bus_call(bus, request.pointer, UInt64(max(0, timeoutNs) / 1000), &error, &reply)
        guard rc >= 0, let reply else {
            throw DBusCallError(member: "\(interface).\(member)", destination: destination,
                                name: error.name.map { String(cString: $0) }, text: error.message.map { String(cString: $0) },
                                errno: -rc).captureError
        }
        return DBusMessage(owning: reply)
    }

    /// Reads one property (org.freedesktop.DBus.Properties.Get); the reader stands inside the variant.
    public func property(_ destination: String, _ path: String, _ interface: String, _ name: String,
                         timeoutNs: Int64 = 5_000_000_000) throws(CaptureError) -> DBusMessage {
        let reply = try call(destination, path, "org.freedesktop.DBus.Properties", "Get", timeoutNs: timeoutNs) { (w) throws(CaptureError) in
            try w.append(interface)
            try w.append(name)
        }
        try reply.reader.enterVariant()
        return reply
    }

    // MARK: Signals

    /// Calls `handler` for every matching signal that arrives while the owner waits in
    /// `wait(until:wakeFD:)`. The match is in place when this returns (subscribe before a call
    /// whose answer comes as a signal). Returns a token for `removeMatch`.
    @discardableResult
    public func addSignalMatch(sender: String?, path: String, interface: String, member: String,
                               handler: @escaping (DBusMessage) -> Void) throws(CaptureError) -> Int {
        owner.check()
        var rule = "type='signal',path='\(path)',interface='\(interface)',member='\(member)'"
        if let sender { rule += ",sender='\(sender)'" }
        nextMatchToken += 1
        let match = SignalMatch(token: nextMatchToken, handler: handler)
        var slot: OpaquePointer?
        let rc = sd_bus_add_match(bus, &slot, rule, { message, userdata, _ in
            guard let message, let userdata else { return 0 }
            let match = Unmanaged<SignalMatch>.fromOpaque(userdata).takeUnretainedValue()
            match.handler(DBusMessage(borrowing: message))
            return 0
        }, Unmanaged.passUnretained(match).toOpaque())
        guard rc >= 0, let slot else {
            throw CaptureError(.internalError, "cannot subscribe to \(interface).\(member) on the session bus: \(Self.describe(errno: -rc))")
        }
        match.slot = slot
        matches.append(match)
        return match.token
    }

    /// Drops a match made by `addSignalMatch`.
    public func removeMatch(_ token: Int) {
        owner.check()
        guard let i = matches.firstIndex(where: { $0.token == token }) else { return }
        sd_bus_slot_unref(matches[i].slot)
        matches.remove(at: i)
    }

    /// What ended a wait.
    public enum WaitResult: Equatable {
        /// `done()` said yes.
        case done
        /// The deadline passed.
        case timedOut
        /// `wakeup` was signalled (the owner's other work wants attention).
        case woken
    }

    /// Dispatches incoming messages (signals to their handlers) until `done()` is true, the
    /// monotonic `deadline` passes or `wakeup` is signalled. A wait that is woken, not a poll:
    /// the thread sleeps in poll(2) on the bus and the wake-up. Throws when the bus connection
    /// is lost.
    public func wait(until deadline: Int64, wakeup: Wakeup? = nil, done: () -> Bool) throws(CaptureError) -> WaitResult {
        owner.check()
        while true {
            // Everything already read gets dispatched first.
            while true {
                let rc = sd_bus_process(bus, nil)
                if rc < 0 {
                    throw CaptureError(.displayUnavailable, "the D-Bus session bus connection was lost: \(Self.describe(errno: -rc))")
                }
                if done() { return .done }
                if rc == 0 { break }
            }
            let now = MonotonicClock.now()
            if now >= deadline { return .timedOut }
            var fds = [pollfd(fd: sd_bus_get_fd(bus), events: Int16(truncatingIfNeeded: sd_bus_get_events(bus)), revents: 0)]
            if let wakeup { fds.append(pollfd(fd: wakeup.fd, events: Int16(POLLIN), revents: 0)) }
            var timeoutMs = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
            var busTimeout: UInt64 = 0
            if sd_bus_get_timeout(bus, &busTimeout) > 0, busTimeout != UInt64.max {
                var ts = timespec()
                clock_gettime(CLOCK_MONOTONIC, &ts)
                let nowUs = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
                timeoutMs = min(timeoutMs, Int32(clamping: busTimeout > nowUs ? (busTimeout - nowUs + 999) / 1000 : 0))
            }
            let rc = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), timeoutMs) }
            if rc < 0 && errno != EINTR {
                throw CaptureError(.internalError, "poll on the session bus failed: \(Self.describe(errno: errno))")
            }
            if fds.count > 1, fds[1].revents & Int16(POLLIN) != 0 { return .woken }
        }
    }

    static func describe(errno code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// One signal subscription: its handler and sd-bus slot.
    private final class SignalMatch {
        let token: Int
        let handler: (DBusMessage) -> Void
        var slot: OpaquePointer?
        init(token: Int, handler: @escaping (DBusMessage) -> Void) {
            self.token = token
            self.handler = handler
        }
    }
}

/// A D-Bus error reply (or a failure to get any reply).
public struct DBusCallError: Error, Sendable {
    public var member: String
    public var destination: String
    /// The error's D-Bus name ("org.freedesktop.DBus.Error.ServiceUnknown"), if the peer sent one.
    public var name: String?
    public var text: String?
    public var errno: Int32

    var captureError: CaptureError {
        let what = name.map { "\($0): \(text ?? "")" } ?? SessionBus.describe(errno: errno)
        return CaptureError(.displayUnavailable, "\(member) on \(destination) failed: \(what)")
    }
}

/// Checks in debug builds that an object confined to one thread is only used there (what
/// NIO's `NIOLoopBound` does for event loops): the first use fixes the thread.
struct ThreadOwner {
    #if DEBUG
    private let thread = Box()
    private final class Box { var id: pthread_t? }
    #endif

    @inline(__always)
    func check(_ file: StaticString = #fileID, _ line: UInt = #line) {
        #if DEBUG
        let me = pthread_self()
        if let id = thread.id {
            precondition(pthread_equal(id, me) != 0, "used from a thread other than its owner's", file: file, line: line)
        } else {
            thread.id = me
        }
        #endif
    }
}
