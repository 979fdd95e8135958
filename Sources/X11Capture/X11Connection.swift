package import CX11
public import CaptureCore
import CaptureConcurrency
#if canImport(Glibc)
import Glibc
import Synchronization
#endif

/// One connection to the X server.
///
/// Not thread-safe and deliberately not Sendable: it is owned by one thread (each capture
/// thread opens its own). Survives the server going away: Xlib's exit-on-IO-error
/// defaults are replaced, the connection is marked dead (`isAlive == false`) and every
/// operation then throws `DISPLAY_UNAVAILABLE` instead of calling into Xlib.
public final class X11Connection {
    package let display: OpaquePointer
    let health: DisplayHealth
    let screen: Int32
    package let root: Window
    let visual: UnsafeMutablePointer<Visual>
    let depth: Int32

    public let displayName: String
    public private(set) var rootWidth: Int
    public private(set) var rootHeight: Int

    public let hasShm: Bool
    public let hasXFixes: Bool
    public let hasDamage: Bool
    /// RandR 1.5 or newer (monitors); older RandR counts as missing.
    public let hasRandR: Bool

    let damageEventBase: Int32
    let xfixesEventBase: Int32
    let randrEventBase: Int32
    /// A RandR event arrived since `takeLayoutChange()` last looked (see `watchScreenLayout`).
    private var layoutChanged = false

    /// Grabbers that receive this connection's events (damage, cursor notify). Not owning:
    /// a grabber holds its connection strongly and removes itself in its deinit.
    private var eventSinks: [Unmanaged<ScreenGrabber>] = []

    /// Opens a connection. `displayName` nil means `$DISPLAY`.
    /// Throws DISPLAY_UNAVAILABLE when no display is named or none answers.
    public init(displayName: String? = nil) throws(CaptureError) {
        X11ErrorHandling.installGlobalHandlers()
        // libXext's per-display extension records (MIT-SHM, DAMAGE, XFIXES,
        // RandR) are not safe to create and destroy from several threads at
        // once, even after XInitThreads: two threads opening displays
        // corrupted the heap. Opening, the extension queries and closing are
        // rare (per session, per device query), so one process-wide lock.
        Self.setupLock.lock()
        defer { Self.setupLock.unlock() }

        var name = displayName
        if name == nil, let env = getenv("DISPLAY") { name = String(cString: env) }
        guard let name, !name.isEmpty else {
            throw CaptureError(.displayUnavailable,
                               "no X display given and DISPLAY is not set; set DISPLAY (e.g. DISPLAY=:0) to the X server to capture")
        }
        guard let dpy = XOpenDisplay(name) else {
            throw CaptureError(.displayUnavailable,
                               "cannot open X display '\(name)': no X server answers there or it refused this client; check DISPLAY, that the server is running, and XAUTHORITY/xhost access")
        }
        display = dpy
        health = X11ErrorHandling.register(dpy)
        self.displayName = String(cString: XDisplayString(dpy))
        screen = XDefaultScreen(dpy)
        root = XRootWindow(dpy, screen)
        visual = XDefaultVisual(dpy, screen)
        depth = XDefaultDepth(dpy, screen)
        rootWidth = Int(XDisplayWidth(dpy, screen))
        rootHeight = Int(XDisplayHeight(dpy, screen))

        var eventBase: Int32 = 0, errorBase: Int32 = 0
        var major: Int32 = 0, minor: Int32 = 0, pixmaps: Int32 = 0

        hasShm = XShmQueryExtension(dpy) != 0 && XShmQueryVersion(dpy, &major, &minor, &pixmaps) != 0

        if XFixesQueryExtension(dpy, &eventBase, &errorBase) != 0 {
            major = 5; minor = 0
            // Cursor images and CursorNotify need XFIXES 2 or newer.
            hasXFixes = XFixesQueryVersion(dpy, &major, &minor) != 0 && major >= 2
            xfixesEventBase = eventBase
        } else {
            hasXFixes = false
            xfixesEventBase = -1
        }

        if XDamageQueryExtension(dpy, &eventBase, &errorBase) != 0 {
            major = 1; minor = 1
            // The protocol requires QueryVersion before any other DAMAGE request.
            hasDamage = XDamageQueryVersion(dpy, &major, &minor) != 0
            damageEventBase = eventBase
        } else {
            hasDamage = false
            damageEventBase = -1
        }

        if XRRQueryExtension(dpy, &eventBase, &errorBase) != 0 {
            major = 0; minor = 0
            hasRandR = XRRQueryVersion(dpy, &major, &minor) != 0 && (major > 1 || (major == 1 && minor >= 5))
            randrEventBase = eventBase
        } else {
            hasRandR = false
            randrEventBase = -1
        }
        eventSinks.reserveCapacity(4)

        if health.isDead {
            throw CaptureError(.displayUnavailable, "X display '\(name)' closed the connection while it was being set up")
        }
    }

    /// Serializes opening (with the extension queries) and closing of connections.
    private static let setupLock = PThreadLock()

    deinit {
        // Safe on a dead connection too: Xlib skips the wire and frees the Display.
        Self.setupLock.lock()
        defer { Self.setupLock.unlock() }
        XCloseDisplay(display)
        X11ErrorHandling.unregister(display, health: health)
    }

    /// False once the server went away (detected on the next call that touches the wire).
    public var isAlive: Bool { !health.isDead }

    /// Throws DISPLAY_UNAVAILABLE if the connection broke.
    @inline(__always)
    package func checkAlive() throws(CaptureError) {
        if health.isDead { throw Self.serverGone(displayName) }
    }

    static func serverGone(_ name: String) -> CaptureError {
        CaptureError(.displayUnavailable,
                     "the X server on '\(name)' went away (connection lost); capture of this display stopped, reconnect when it is back")
    }

    var protocolErrorCount: Int { health.protocolErrorCount.load(ordering: .acquiring) }

    /// The monitors RandR reports (active ones, in RandR order), or the whole root window
    /// as a single monitor named "screen" when RandR is missing or reports none. Also
    /// refreshes `rootWidth` / `rootHeight`.
    public func monitors() throws(CaptureError) -> [MonitorInfo] {
        try checkAlive()
        var rootReturn: Window = 0
        var gx: Int32 = 0, gy: Int32 = 0
        var gw: UInt32 = 0, gh: UInt32 = 0, border: UInt32 = 0, gdepth: UInt32 = 0
        if XGetGeometry(display, root, &rootReturn, &gx, &gy, &gw, &gh, &border, &gdepth) != 0 {
            rootWidth = Int(gw)
            rootHeight = Int(gh)
        }
        try checkAlive()

        var result: [MonitorInfo] = []
        if hasRandR {
            var count: Int32 = 0
            if let list = XRRGetMonitors(display, root, 1, &count) {
                defer { XRRFreeMonitors(list) }
                for i in 0..<Int(max(count, 0)) {
                    let m = list[i]
                    var name = "monitor-\(i + 1)"
                    if m.name != 0, let cName = XGetAtomName(display, m.name) {
                        name = String(cString: cName)
                        XFree(cName)
                    }
                    result.append(MonitorInfo(index: i + 1, name: name, x: Int(m.x), y: Int(m.y),
                                              width: Int(m.width), height: Int(m.height),
                                              isPrimary: m.primary != 0))
                }
            }
            try checkAlive()
        }
        if result.isEmpty {
            result = [MonitorInfo(index: 1, name: "screen", x: 0, y: 0,
                                  width: rootWidth, height: rootHeight, isPrimary: true)]
        }
        return result
    }

    // MARK: Events

    /// Asks the server for RandR's screen, CRTC and output change events: a monitor whose mode or
    /// position changes, one turned off or plugged in. They are read with the other events
    /// (`drainEvents`); `takeLayoutChange()` tells whether any came. No-op without RandR 1.5.
    public func watchScreenLayout() throws(CaptureError) {
        guard hasRandR else { return }
        try checkAlive()
        cx11_watch_screen_layout(display, root)
        XSync(display, 0)
        try checkAlive()
    }

    /// Whether the screen layout changed since the last call (and forgets it).
    public func takeLayoutChange() -> Bool {
        defer { layoutChanged = false }
        return layoutChanged
    }

    func addEventSink(_ grabber: ScreenGrabber) {
        eventSinks.append(Unmanaged.passUnretained(grabber))
    }

    func removeEventSink(_ grabber: ScreenGrabber) {
        let p = Unmanaged.passUnretained(grabber).toOpaque()
        eventSinks.removeAll { $0.toOpaque() == p }
    }

    /// Reads every event the server has sent so far (never blocks) and hands damage and
    /// cursor events to the grabbers. No allocation: Xlib recycles its queue entries.
    func drainEvents() throws(CaptureError) {
        try checkAlive()
        var event = XEvent()
        var pending = XPending(display)           // flushes, then reads without blocking
        while pending > 0 {
            for _ in 0..<pending {
                XNextEvent(display, &event)
                dispatch(&event)
            }
            pending = XEventsQueued(display, QueuedAfterReading)
        }
        try checkAlive()
    }

    private func dispatch(_ event: inout XEvent) {
        let type = event.type
        if hasDamage && type == damageEventBase + XDamageNotify {
            let notify = withUnsafeBytes(of: &event) { $0.load(as: XDamageNotifyEvent.self) }
            for sink in eventSinks {
                sink.takeUnretainedValue().noteDamage(notify)
            }
        } else if hasXFixes && type == xfixesEventBase + XFixesCursorNotify {
            for sink in eventSinks {
                sink.takeUnretainedValue().noteCursorChanged()
            }
        } else if hasRandR && (type == randrEventBase + RRScreenChangeNotify || type == randrEventBase + RRNotify) {
            // Keeps Xlib's idea of the screen size current (XDisplayWidth/Height).
            if type == randrEventBase + RRScreenChangeNotify { XRRUpdateConfiguration(&event) }
            layoutChanged = true
        }
        // Anything else (there should be nothing else) is dropped.
    }
}
