public import CaptureCore
public import SessionBus
#if canImport(Glibc)
import Glibc
#endif

/// How the pointer reaches a screencast (the portal's `cursor_mode`).
public enum PortalCursorMode: UInt32, Sendable {
    /// Not in the picture.
    case hidden = 1
    /// Drawn into the frames by the compositor.
    case embedded = 2
    /// Sent beside the frames as metadata (position, image), for the consumer to draw.
    case metadata = 4
}

/// One PipeWire stream a started screencast offers.
public struct PortalStream: Sendable, Equatable {
    /// The PipeWire node to connect to.
    public var nodeId: UInt32
    /// Where the shared monitor lies in the compositor's (logical) coordinate space, and its
    /// size there; nil when the portal did not say.
    public var position: (x: Int, y: Int)?
    public var size: (width: Int, height: Int)?
    /// 1 monitor, 2 window, 4 virtual.
    public var sourceType: UInt32?
    /// The portal's own identifier of the stream, when it gives one.
    public var id: String?

    public init(nodeId: UInt32, position: (x: Int, y: Int)? = nil, size: (width: Int, height: Int)? = nil,
                sourceType: UInt32? = nil, id: String? = nil) {
        self.nodeId = nodeId
        self.position = position
        self.size = size
        self.sourceType = sourceType
        self.id = id
    }

    public static func == (a: PortalStream, b: PortalStream) -> Bool {
        a.nodeId == b.nodeId && a.position?.x == b.position?.x && a.position?.y == b.position?.y
            && a.size?.width == b.size?.width && a.size?.height == b.size?.height
            && a.sourceType == b.sourceType && a.id == b.id
    }
}

/// The desktop's ScreenCast portal (`org.freedesktop.portal.ScreenCast`), spoken over the
/// session bus: CreateSession -> SelectSources -> Start (the consent dialog, or none when a
/// restore token restores an earlier choice) -> OpenPipeWireRemote. Every call answers
/// through a Request object's `Response` signal, which is subscribed to before the call.
///
/// Confined to the thread that made it (its bus is).
public final class ScreenCastPortal {
    public static let service = "org.freedesktop.portal.Desktop"
    static let objectPath = "/org/freedesktop/portal/desktop"
    static let interface = "org.freedesktop.portal.ScreenCast"

    let bus: SessionBus
    /// The portal's interface version (persistence and restore tokens need 4).
    public let version: UInt32
    /// Cursor modes the backend offers (bits of `PortalCursorMode`).
    public let availableCursorModes: UInt32
    /// Source types the backend offers (1 monitor, 2 window, 4 virtual).
    public let availableSourceTypes: UInt32
    private var requests = 0
    private let tokenPrefix: String

    /// Connects and asks the portal what it offers. Throws DISPLAY_UNAVAILABLE when there is
    /// no session bus or no ScreenCast portal on it.
    public init(bus: SessionBus? = nil) throws(CaptureError) {
        let bus: SessionBus = if let bus { bus } else { try SessionBus() }
        self.bus = bus
        func uint(_ name: String) throws(CaptureError) -> UInt32 {
            do {
                return try bus.property(Self.service, Self.objectPath, Self.interface, name).reader.readUInt32()
            } catch {
                throw CaptureError(.displayUnavailable,
                    "the desktop offers no ScreenCast portal (\(error.message)); install xdg-desktop-portal and the backend of your desktop (xdg-desktop-portal-gnome, -kde or -wlr), and make sure the session bus knows WAYLAND_DISPLAY (dbus-update-activation-environment --systemd WAYLAND_DISPLAY XDG_CURRENT_DESKTOP)")
            }
        }
        version = try uint("version")
        availableCursorModes = (try? uint("AvailableCursorModes")) ?? PortalCursorMode.hidden.rawValue
        availableSourceTypes = (try? uint("AvailableSourceTypes")) ?? 1
        // Handle tokens must be unique per sender: the process and a counter.
        tokenPrefix = "capture_agent_\(getpid())_\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Whether the portal can remember a choice (persist_mode, restore tokens: version 4).
    public var canPersist: Bool { version >= 4 }

    /// The best cursor mode for `drawCursor`: our own drawing from metadata when offered,
    /// else the compositor's; hidden when the pointer is not wanted.
    public func cursorMode(drawCursor: Bool) -> PortalCursorMode {
        guard drawCursor else { return .hidden }
        if availableCursorModes & PortalCursorMode.metadata.rawValue != 0 { return .metadata }
        if availableCursorModes & PortalCursorMode.embedded.rawValue != 0 { return .embedded }
        return .hidden
    }

    /// Asks for one monitor: the whole conversation up to the streams. With a restore token
    /// of an earlier choice the portal restores it without a dialog (when it still can);
    /// otherwise the desktop asks the user, and this waits until `deadline` (monotonic ns).
    /// When `wakeup` is signalled, `abandon()` says whether to give up the wait (the dialog is
    /// then closed); otherwise the wait goes on.
    ///
    /// Throws PERMISSION_DENIED when the user declined, TIMEOUT when nobody answered in time,
    /// DISPLAY_UNAVAILABLE when the portal failed.
    public func selectMonitor(cursorMode: PortalCursorMode, restoreToken: String?, deadline: Int64,
                              wakeup: Wakeup? = nil, abandon: () -> Bool = { true }) throws(CaptureError) -> PortalScreenCast {
        // A backend that is starting owns its bus name before it serves ScreenCast, and a
        // request then ends with response 2: the first request after login (the bus starts
        // the backend on demand) or after the backend crashed (xdg-desktop-portal-gnome before
        // 47 does when a dialog is closed for us). No dialog has been shown yet at this step,
        // so it is tried again, quietly, for a few seconds.
        var session: PortalScreenCast
        var pauseNs: Int64 = 200_000_000
        let settleBy = min(deadline, MonotonicClock.now() + Self.backendStartAllowance)
        while true {
            do {
                session = try openSession(cursorMode: cursorMode, restoreToken: restoreToken, deadline: deadline,
                                          wakeup: wakeup, abandon: abandon)
                break
            } catch where error.code == .displayUnavailable && MonotonicClock.now() + pauseNs < settleBy {
                if try bus.wait(until: MonotonicClock.now() + pauseNs, wakeup: wakeup, done: { false }) == .woken {
                    if abandon() {
                        throw CaptureError(.invalidState, "creating a screencast session was abandoned: the recording is stopping")
                    }
                    wakeup?.drain()
                }
                pauseNs *= 2
            }
        }
        let sessionHandle = session.handle
        let started = try request("Start", deadline: deadline, wakeup: wakeup, abandon: abandon, what: "the screen-sharing dialog") {
            (w, token) throws(CaptureError) in
            try w.appendObjectPath(sessionHandle)
            try w.append("")    // no parent window: we have none
            try w.appendDictionary([("handle_token", .string(token))])
        }
        guard !started.streams.isEmpty else {
            throw CaptureError(.displayUnavailable, "the ScreenCast portal started a session with no stream")
        }
        session.streams = started.streams
        session.restoreToken = started.restoreToken
        return session
    }

    /// How long a backend that is starting is given (see `selectMonitor`).
    static let backendStartAllowance: Int64 = 4_000_000_000

    /// CreateSession and SelectSources: a session that is ready to Start.
    private func openSession(cursorMode: PortalCursorMode, restoreToken: String?, deadline: Int64,
                             wakeup: Wakeup?, abandon: () -> Bool) throws(CaptureError) -> PortalScreenCast {
        let created = try request("CreateSession", deadline: deadline, wakeup: wakeup, abandon: abandon, what: "creating a screencast session") {
            (w, token) throws(CaptureError) in
            try w.appendDictionary([("handle_token", .string(token)), ("session_handle_token", .string(token))])
        }
        guard let sessionHandle = created.sessionHandle else {
            throw CaptureError(.displayUnavailable, "the ScreenCast portal created a session but did not say its handle")
        }
        let session = PortalScreenCast(portal: self, handle: sessionHandle)
        try session.watchClosed()
        var options: [(String, DBusVariant)] = [
            ("types", .uint32(1)),            // monitors
            ("multiple", .bool(false)),
        ]
        if availableCursorModes & cursorMode.rawValue != 0 {
            options.append(("cursor_mode", .uint32(cursorMode.rawValue)))
        }
        if canPersist {
            options.append(("persist_mode", .uint32(2)))   // until revoked
            if let restoreToken, !restoreToken.isEmpty { options.append(("restore_token", .string(restoreToken))) }
        }
        _ = try request("SelectSources", deadline: deadline, wakeup: wakeup, abandon: abandon, what: "selecting the monitor") {
            (w, token) throws(CaptureError) in
            try w.appendObjectPath(sessionHandle)
            try w.appendDictionary(options + [("handle_token", .string(token))])
        }
        return session
    }

    /// Whether xdg-desktop-portal still holds the choice behind a restore token (its
    /// permission store's "screencast" table; revoking removes it there). Unknown counts as
    /// yes: the portal decides when it is used.
    public func canRestore(_ token: String) -> Bool {
        do {
            _ = try bus.call("org.freedesktop.impl.portal.PermissionStore", "/org/freedesktop/impl/portal/PermissionStore",
                             "org.freedesktop.impl.portal.PermissionStore", "Lookup", timeoutNs: 2_000_000_000) {
                (w) throws(CaptureError) in
                try w.append("screencast")
                try w.append(token)
            }
            return true
        } catch {
            return !error.message.contains("org.freedesktop.portal.Error.NotFound")
        }
    }

    // MARK: Requests

    /// What a Request's Response carried that we use.
    struct Results {
        var sessionHandle: String?
        var streams: [PortalStream] = []
        var restoreToken: String?
    }

    /// Calls `method` and waits for its Request's Response.
    private func request(_ method: String, deadline: Int64, wakeup: Wakeup?, abandon: () -> Bool, what: String,
                         arguments: (inout DBusMessageWriter, String) throws(CaptureError) -> Void) throws(CaptureError) -> Results {
        requests += 1
        let token = "\(tokenPrefix)_\(requests)"
        // The Request's path is known before the call (the spec's way to never miss the
        // Response): .../request/<sender without ':' and with '.' as '_'>/<token>.
        let sender = bus.uniqueName.dropFirst().replacing(".", with: "_")
        var path = "\(Self.objectPath)/request/\(sender)/\(token)"
        var response: (code: UInt32, results: Results)?
        var parseError: CaptureError?
        let handler: (DBusMessage) -> Void = { message in
            do throws(CaptureError) {
                let reader = message.reader
                let code = try reader.readUInt32()
                response = (code, try Self.readResults(reader))
            } catch {
                parseError = error
                response = (2, Results())
            }
        }
        var match = try bus.addSignalMatch(sender: nil, path: path, interface: "org.freedesktop.portal.Request",
                                           member: "Response", handler: handler)
        defer { bus.removeMatch(match) }
        let reply = try bus.call(Self.service, Self.objectPath, Self.interface, method) { (w) throws(CaptureError) in
            try arguments(&w, token)
        }
        let returned = try reply.reader.readObjectPath()
        if returned != path {
            // A portal older than the handle_token convention: follow the path it returned.
            bus.removeMatch(match)
            path = returned
            match = try bus.addSignalMatch(sender: nil, path: path, interface: "org.freedesktop.portal.Request",
                                           member: "Response", handler: handler)
        }
        var ended = try bus.wait(until: deadline, wakeup: wakeup) { response != nil }
        while ended == .woken && response == nil && !abandon() {
            // A wake-up that is not for us (it came before we started waiting): wait on.
            wakeup?.drain()
            ended = try bus.wait(until: deadline, wakeup: wakeup) { response != nil }
        }
        guard let response else {
            // Nobody answered (or we were told to stop): close the dialog.
            _ = try? bus.call(Self.service, path, "org.freedesktop.portal.Request", "Close", timeoutNs: 2_000_000_000)
            if ended == .woken {
                throw CaptureError(.invalidState, "\(what) was abandoned: the recording is stopping")
            }
            throw CaptureError(.timeout, "\(what): no answer from the desktop in time (screen_consent_timeout); nobody answered the screen-sharing dialog")
        }
        if let parseError { throw parseError }
        switch response.code {
        case 0: return response.results
        case 1: throw CaptureError(.permissionDenied, "the user declined screen sharing in the desktop's dialog")
        default:
            // 2: "ended some other way": the backend failed (or was starting up), not the user.
            throw CaptureError(.displayUnavailable, "the ScreenCast portal ended \(what) without sharing the screen (response \(response.code)); the desktop's screen-sharing backend failed: see its log (journalctl --user -u 'xdg-desktop-portal*')")
        }
    }

    /// Reads a Response's `a{sv}` results.
    static func readResults(_ reader: DBusMessageReader) throws(CaptureError) -> Results {
        var results = Results()
        try reader.readDictionary { (key, value) throws(CaptureError) in
            switch key {
            case "session_handle":
                // A string in the spec (an object path in some versions).
                results.sessionHandle = value.peek()?.type == "o" ? try value.readObjectPath() : try value.readString()
            case "restore_token":
                results.restoreToken = try value.readString()
            case "streams":
                try value.enterArray("(ua{sv})")
                while value.peek()?.type == "r" {
                    try value.enterStruct("ua{sv}")
                    var stream = PortalStream(nodeId: try value.readUInt32())
                    try value.readDictionary { (key, v) throws(CaptureError) in
                        func pair() throws(CaptureError) -> (Int, Int) {
                            try v.enterStruct("ii")
                            let pair = (Int(try v.readInt32()), Int(try v.readInt32()))
                            try v.exitContainer()
                            return pair
                        }
                        switch key {
                        case "position": stream.position = try pair()
                        case "size": stream.size = try pair()
                        case "source_type": stream.sourceType = try v.readUInt32()
                        case "id": stream.id = try v.readString()
                        default: break
                        }
                    }
                    try value.exitContainer()
                    results.streams.append(stream)
                }
                try value.exitContainer()
            default:
                break
            }
        }
        return results
    }
}

/// A started screencast: its streams, the token that restores the choice next time, and the
/// portal session that keeps them alive (closed with this object).
public final class PortalScreenCast {
    private let portal: ScreenCastPortal
    public let handle: String
    public internal(set) var streams: [PortalStream] = []
    /// A new token after every Start (the one passed in is spent); nil when the portal cannot
    /// persist or the user unticked "remember".
    public internal(set) var restoreToken: String?
    /// The portal closed the session (the user stopped sharing, the backend went away).
    public private(set) var closedByPortal = false
    private var closeMatch: Int?
    private var closed = false

    init(portal: ScreenCastPortal, handle: String) {
        self.portal = portal
        self.handle = handle
    }

    deinit { close() }

    func watchClosed() throws(CaptureError) {
        closeMatch = try portal.bus.addSignalMatch(sender: nil, path: handle, interface: "org.freedesktop.portal.Session",
                                                   member: "Closed") { [weak self] _ in self?.closedByPortal = true }
    }

    /// A descriptor connected to the PipeWire server with access to this session's streams
    /// (the caller owns it).
    public func openPipeWireRemote() throws(CaptureError) -> Int32 {
        let reply = try portal.bus.call(ScreenCastPortal.service, ScreenCastPortal.objectPath, ScreenCastPortal.interface,
                                        "OpenPipeWireRemote") { (w) throws(CaptureError) in
            try w.appendObjectPath(handle)
            try w.appendDictionary([])
        }
        return try reply.reader.readFileDescriptor()
    }

    /// Dispatches the portal's signals until `deadline` or until `wakeup` is signalled;
    /// returns true when the portal closed the session meanwhile.
    public func watch(until deadline: Int64, wakeup: Wakeup?) throws(CaptureError) -> Bool {
        _ = try portal.bus.wait(until: deadline, wakeup: wakeup) { closedByPortal }
        return closedByPortal
    }

    /// Ends the session (its streams stop). Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        if let closeMatch { portal.bus.removeMatch(closeMatch) }
        if !closedByPortal {
            _ = try? portal.bus.call(ScreenCastPortal.service, handle, "org.freedesktop.portal.Session", "Close",
                                     timeoutNs: 2_000_000_000)
        }
    }
}
