internal import CWayland
public import CaptureCore
public import CaptureConcurrency
#if canImport(Glibc)
import Glibc
#endif

/// One monitor of a Wayland desktop, as the compositor announces it: `wl_output` (connector
/// name, mode in pixels, scale) and `xdg_output` (position and size in the compositor's
/// logical coordinates, the ones the ScreenCast portal reports a stream's place in).
public struct WaylandOutput: Sendable, Equatable {
    /// The connector ("DP-1", "eDP-1", "Meta-0"), stable for as long as the monitor is plugged.
    public var name: String
    public var description: String
    /// Logical position and size (xdg-output; from the mode and scale when it is missing).
    public var x: Int, y: Int, width: Int, height: Int
    /// The current mode, in pixels.
    public var pixelWidth: Int, pixelHeight: Int
    public var scale: Int

    public init(name: String, description: String = "", x: Int, y: Int, width: Int, height: Int,
                pixelWidth: Int, pixelHeight: Int, scale: Int = 1) {
        self.name = name
        self.description = description
        self.x = x
        self.y = y
        self.width = width
        self.height = height
        self.pixelWidth = pixelWidth
        self.pixelHeight = pixelHeight
        self.scale = scale
    }

    public var rect: PixelRect { PixelRect(x: x, y: y, width: width, height: height) }

    /// Display channels number the monitors: the primary first (Wayland has no such notion, so
    /// the caller says which one, e.g. from GNOME's DisplayConfig; without one, the monitor at
    /// the origin), then left to right, top to bottom, then by name. The same layout always
    /// gives the same numbers.
    public static func numbered(_ outputs: [WaylandOutput], primary: String? = nil) -> [MonitorInfo] {
        let primaryName = primary.flatMap { p in outputs.contains { $0.name == p } ? p : nil }
            ?? outputs.first { $0.x == 0 && $0.y == 0 }?.name
        let sorted = outputs.sorted { a, b in
            if (a.name == primaryName) != (b.name == primaryName) { return a.name == primaryName }
            if a.x != b.x { return a.x < b.x }
            if a.y != b.y { return a.y < b.y }
            return a.name < b.name
        }
        return sorted.enumerated().map { i, o in
            MonitorInfo(index: i + 1, name: o.name, x: o.x, y: o.y, width: o.width, height: o.height,
                        isPrimary: o.name == primaryName)
        }
    }
}

/// A client connection to the Wayland compositor, for its monitors (and to notice the
/// session ending: a compositor that goes away takes its desktop with it).
///
/// Owned by the thread that made it (libwayland's default queue is dispatched there); not
/// Sendable.
public final class WaylandConnection {
    private let display: OpaquePointer
    private let registry: OpaquePointer
    private var xdgOutputManager: OpaquePointer?
    private var records: [OutputRecord] = []
    private var registryListener: UnsafeMutablePointer<wl_registry_listener>
    /// The socket name or path connected to (WAYLAND_DISPLAY).
    public let displayName: String
    /// Bumped when a monitor appears, goes or changes (each `done`).
    public private(set) var generation = 0
    private let live = WaylandConnection.liveInstances.token()
    public static let liveInstances = LiveInstances("WaylandConnection")

    /// Connects to `name` (nil: `$WAYLAND_DISPLAY`, as every Wayland client does) and learns
    /// the monitors (two round trips). Throws DISPLAY_UNAVAILABLE when there is no compositor.
    public init(displayName name: String? = nil) throws(CaptureError) {
        let env = getenv("WAYLAND_DISPLAY").map { String(cString: $0) }
        let shown = name ?? env ?? "wayland-0"
        guard let display = wl_display_connect(name) else {
            let reason = String(cString: strerror(errno))
            throw CaptureError(.displayUnavailable,
                "cannot connect to the Wayland compositor '\(shown)' (\(reason)); is this a Wayland session, and are WAYLAND_DISPLAY and XDG_RUNTIME_DIR set? (under systemd: systemctl --user import-environment WAYLAND_DISPLAY)")
        }
        guard let registry = wl_display_get_registry(display) else {
            wl_display_disconnect(display)
            throw CaptureError(.displayUnavailable, "the Wayland compositor '\(shown)' gave no registry")
        }
        self.display = display
        self.registry = registry
        self.displayName = shown
        registryListener = .allocate(capacity: 1)
        registryListener.initialize(to: wl_registry_listener(
            global: { data, _, name, interface, version in
                guard let data, let interface else { return }
                Unmanaged<WaylandConnection>.fromOpaque(data).takeUnretainedValue()
                    .announce(global: name, interface: String(cString: interface), version: version)
            },
            global_remove: { data, _, name in
                guard let data else { return }
                Unmanaged<WaylandConnection>.fromOpaque(data).takeUnretainedValue().remove(global: name)
            }))
        wl_registry_add_listener(registry, registryListener, Unmanaged.passUnretained(self).toOpaque())
        // First the globals, then each output's (and xdg_output's) description.
        try roundTrip()
        try roundTrip()
    }

    deinit {
        for record in records { record.destroy() }
        if let xdgOutputManager { zxdg_output_manager_v1_destroy(xdgOutputManager) }
        wl_registry_destroy(registry)
        wl_display_disconnect(display)
        registryListener.deallocate()
    }

    /// The monitors now, complete ones only (each has said `done`).
    public var outputs: [WaylandOutput] {
        records.compactMap(\.output)
    }

    /// Reads and handles whatever the compositor sent, without blocking. Returns true when the
    /// monitors changed since the last call. Throws DISPLAY_UNAVAILABLE when the compositor
    /// went away (the Wayland session ended).
    public func dispatchPending() throws(CaptureError) -> Bool {
        let before = generation
        while wl_display_prepare_read(display) != 0 {
            if wl_display_dispatch_pending(display) < 0 { throw lost() }
        }
        _ = wl_display_flush(display)
        var fd = pollfd(fd: wl_display_get_fd(display), events: Int16(POLLIN), revents: 0)
        if poll(&fd, 1, 0) > 0 {
            if wl_display_read_events(display) < 0 { throw lost() }
        } else {
            wl_display_cancel_read(display)
        }
        if wl_display_dispatch_pending(display) < 0 { throw lost() }
        return generation != before
    }

    /// Waits for every request sent so far to be handled, and their events.
    public func roundTrip() throws(CaptureError) {
        if wl_display_roundtrip(display) < 0 { throw lost() }
    }

    private func lost() -> CaptureError {
        let code = wl_display_get_error(display)
        return CaptureError(.displayUnavailable,
            "the Wayland compositor '\(displayName)' went away (\(String(cString: strerror(code == 0 ? EPIPE : code)))): the desktop session ended")
    }

    // MARK: Registry

    private func announce(global name: UInt32, interface: String, version: UInt32) {
        switch interface {
        case "wl_output":
            // Version 4 names the connector; older compositors leave it to xdg-output.
            let bound = min(version, 4)
            guard let proxy = wl_registry_bind(registry, name, cwl_output_interface(), bound) else { return }
            let record = OutputRecord(global: name, output: OpaquePointer(proxy), connection: self)
            records.append(record)
            if let xdgOutputManager { record.attachXDG(manager: xdgOutputManager) }
        case "zxdg_output_manager_v1":
            guard let proxy = wl_registry_bind(registry, name, cwl_xdg_output_manager_interface(), min(version, 3)) else { return }
            xdgOutputManager = OpaquePointer(proxy)
            for record in records { record.attachXDG(manager: OpaquePointer(proxy)) }
        default:
            break
        }
    }

    private func remove(global name: UInt32) {
        guard let i = records.firstIndex(where: { $0.global == name }) else { return }
        records[i].destroy()
        records.remove(at: i)
        generation += 1
    }

    fileprivate func outputChanged() { generation += 1 }
}

/// One bound `wl_output` and its `xdg_output`: the properties arrive one event at a time and
/// count once `done` came.
private final class OutputRecord {
    let global: UInt32
    let proxy: OpaquePointer
    var xdgOutput: OpaquePointer?
    unowned let connection: WaylandConnection
    private let outputListener: UnsafeMutablePointer<wl_output_listener>
    private let xdgListener: UnsafeMutablePointer<zxdg_output_v1_listener>

    var name = "", description = ""
    var xdgName: String?
    var pixelWidth = 0, pixelHeight = 0, scale = 1
    var x = 0, y = 0
    var logical: (x: Int, y: Int, width: Int, height: Int)?
    var outputDone = false, xdgDone = false

    init(global: UInt32, output: OpaquePointer, connection: WaylandConnection) {
        self.global = global
        self.proxy = output
        self.connection = connection
        outputListener = .allocate(capacity: 1)
        xdgListener = .allocate(capacity: 1)
        outputListener.initialize(to: wl_output_listener(
            geometry: { data, _, x, y, _, _, _, _, _, _ in
                OutputRecord.of(data)?.x = Int(x)
                OutputRecord.of(data)?.y = Int(y)
            },
            mode: { data, _, flags, width, height, _ in
                // Only the current mode counts (old compositors list every mode).
                guard flags & WL_OUTPUT_MODE_CURRENT.rawValue != 0, let r = OutputRecord.of(data) else { return }
                r.pixelWidth = Int(width)
                r.pixelHeight = Int(height)
            },
            done: { data, _ in OutputRecord.of(data)?.markDone(xdg: false) },
            scale: { data, _, factor in OutputRecord.of(data)?.scale = max(1, Int(factor)) },
            name: { data, _, name in if let name { OutputRecord.of(data)?.name = String(cString: name) } },
            description: { data, _, text in if let text { OutputRecord.of(data)?.description = String(cString: text) } }))
        xdgListener.initialize(to: zxdg_output_v1_listener(
            logical_position: { data, _, x, y in
                guard let r = OutputRecord.of(data) else { return }
                r.logical = (Int(x), Int(y), r.logical?.width ?? 0, r.logical?.height ?? 0)
            },
            logical_size: { data, _, width, height in
                guard let r = OutputRecord.of(data) else { return }
                r.logical = (r.logical?.x ?? 0, r.logical?.y ?? 0, Int(width), Int(height))
            },
            done: { data, _ in OutputRecord.of(data)?.markDone(xdg: true) },
            name: { data, _, name in if let name { OutputRecord.of(data)?.xdgName = String(cString: name) } },
            description: { _, _, _ in }))
        wl_output_add_listener(proxy, outputListener, Unmanaged.passUnretained(self).toOpaque())
    }

    private static func of(_ data: UnsafeMutableRawPointer?) -> OutputRecord? {
        data.map { Unmanaged<OutputRecord>.fromOpaque($0).takeUnretainedValue() }
    }

    func attachXDG(manager: OpaquePointer) {
        guard xdgOutput == nil, let proxy = zxdg_output_manager_v1_get_xdg_output(manager, proxy) else { return }
        xdgOutput = proxy
        zxdg_output_v1_add_listener(proxy, xdgListener, Unmanaged.passUnretained(self).toOpaque())
    }

    /// xdg_output version 3 sends its changes followed by wl_output.done; older ones their own done.
    private func markDone(xdg: Bool) {
        if xdg { xdgDone = true } else { outputDone = true }
        connection.outputChanged()
    }

    /// Complete once wl_output said `done` (and a name came from somewhere).
    var output: WaylandOutput? {
        guard outputDone, pixelWidth > 0, pixelHeight > 0 else { return nil }
        let connector = !name.isEmpty ? name : (xdgName ?? "output-\(global)")
        let place: (x: Int, y: Int, width: Int, height: Int) = logical.flatMap { $0.width > 0 && $0.height > 0 ? $0 : nil }
            ?? (x, y, pixelWidth / scale, pixelHeight / scale)
        return WaylandOutput(name: connector, description: description, x: place.x, y: place.y,
                             width: place.width, height: place.height,
                             pixelWidth: pixelWidth, pixelHeight: pixelHeight, scale: scale)
    }

    private var destroyed = false

    func destroy() {
        guard !destroyed else { return }
        destroyed = true
        if let xdgOutput { zxdg_output_v1_destroy(xdgOutput) }
        xdgOutput = nil
        if wl_proxy_get_version(proxy) >= 3 {
            wl_output_release(proxy)
        } else {
            wl_output_destroy(proxy)
        }
        outputListener.deallocate()
        xdgListener.deallocate()
    }
}
