import CX11
import CaptureCore
import Synchronization

// Xlib reports trouble through process-global C callbacks whose defaults call exit():
//
//  - protocol errors (BadMatch, BadAccess, ...) go to the XSetErrorHandler function;
//  - a broken connection goes first to the XSetIOErrorHandler function and then to the
//    per-Display "exit handler" (libX11 >= 1.7, XSetIOErrorExitHandler). Both must return
//    for the process to survive: the default IO handler is noreturn, and the default exit
//    handler calls exit(1). When both return, Xlib flags the Display as broken and every
//    later call on it returns at once with a failure status.
//
// The callbacks only know the Display pointer, so each open connection registers a
// `DisplayHealth` in a global table keyed by that pointer. Errors are a cold path, so a
// Mutex guards the table. The hot path never touches the table: the connection keeps its
// own reference to its `DisplayHealth` and reads its atomics.

/// What the error callbacks learned about one Display. Written by the callbacks (which
/// run on whichever thread made the failing Xlib call on that Display), read by the
/// owning connection. Only atomics inside, so it is Sendable without any unchecked claim.
final class DisplayHealth: Sendable {
    /// Set once the connection broke; never cleared.
    let dead = Atomic<Bool>(false)
    /// Number of protocol errors seen on this Display so far.
    let protocolErrorCount = Atomic<Int>(0)
    /// The last protocol error: error_code | request_code << 8 | minor_code << 16.
    let lastProtocolError = Atomic<Int>(0)

    init() {}

    var isDead: Bool { dead.load(ordering: .acquiring) }

    /// A human-readable description of the last protocol error.
    var lastProtocolErrorDescription: String {
        let packed = lastProtocolError.load(ordering: .acquiring)
        let code = packed & 0xFF, request = (packed >> 8) & 0xFF, minor = (packed >> 16) & 0xFFFF
        return "\(X11ErrorNames.name(ofError: code)) (error \(code), request \(request).\(minor))"
    }
}

enum X11ErrorNames {
    static func name(ofError code: Int) -> String {
        switch code {
        case 1: "BadRequest"
        case 2: "BadValue"
        case 3: "BadWindow"
        case 4: "BadPixmap"
        case 5: "BadAtom"
        case 6: "BadCursor"
        case 7: "BadFont"
        case 8: "BadMatch"
        case 9: "BadDrawable"
        case 10: "BadAccess"
        case 11: "BadAlloc"
        case 12: "BadColor"
        case 13: "BadGC"
        case 14: "BadIDChoice"
        case 15: "BadName"
        case 16: "BadLength"
        case 17: "BadImplementation"
        default: "extension error"
        }
    }
}

/// Display pointer (as an integer) -> its health record. Only the error callbacks and
/// connection open/close touch it.
private let displayTable = Mutex<[UInt: DisplayHealth]>([:])

private func key(_ display: OpaquePointer) -> UInt { UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(display))) }

private func health(of display: OpaquePointer?) -> DisplayHealth? {
    guard let display else { return nil }
    let k = key(display)
    return displayTable.withLock { $0[k] }
}

/// Protocol error: remember it for the connection and return (Xlib then carries on).
/// Must not call back into Xlib.
private let protocolErrorHandler: XErrorHandler = { display, event in
    guard let event, let h = health(of: display) else { return 0 }
    let e = event.pointee
    let packed = Int(e.error_code) | Int(e.request_code) << 8 | Int(e.minor_code) << 16
    h.lastProtocolError.store(packed, ordering: .releasing)
    h.protocolErrorCount.add(1, ordering: .releasing)
    return 0
}

/// Fatal IO error, first stage: mark the Display dead and return instead of exiting.
private let ioErrorHandler: XIOErrorHandler = { display in
    health(of: display)?.dead.store(true, ordering: .releasing)
    return 0
}

/// Fatal IO error, second stage (per Display, libX11 >= 1.7): return instead of exiting,
/// so the Xlib call that hit the error unwinds with a failure status.
private let ioErrorExitHandler: XIOErrorExitHandler = { display, _ in
    health(of: display)?.dead.store(true, ordering: .releasing)
}

/// Installs the process-global handlers exactly once (Swift runs a global's initializer
/// once, thread-safely), before the first XOpenDisplay.
private let globalHandlersInstalled: Bool = {
    // libX11 >= 1.8 already enables thread support from a constructor; calling it again
    // is harmless and makes the requirement explicit: every capture thread owns a Display.
    _ = XInitThreads()
    _ = XSetErrorHandler(protocolErrorHandler)
    _ = XSetIOErrorHandler(ioErrorHandler)
    return true
}()

enum X11ErrorHandling {
    static func installGlobalHandlers() {
        _ = globalHandlersInstalled
    }

    /// Registers a freshly opened Display and gives it the surviving exit handler.
    static func register(_ display: OpaquePointer) -> DisplayHealth {
        let h = DisplayHealth()
        let k = key(display)
        displayTable.withLock { $0[k] = h }
        XSetIOErrorExitHandler(display, ioErrorExitHandler, nil)
        return h
    }

    /// Forgets a Display; call after XCloseDisplay so that errors raised while closing
    /// are still attributed to it. Removes the entry only if it is still `health`: once
    /// closed, the same address may already belong to a Display another thread opened.
    static func unregister(_ display: OpaquePointer, health: DisplayHealth) {
        let k = key(display)
        displayTable.withLock { table in
            if table[k] === health { table[k] = nil }
        }
    }
}
