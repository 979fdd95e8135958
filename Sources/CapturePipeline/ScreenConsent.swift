public import CaptureCore
public import ScreenCastPortal
public import SessionBus
public import WaylandOutputs

/// What happened with the user's consent to share a monitor (`screen-consent` events).
public struct ScreenConsentEvent: Sendable, Equatable {
    public typealias State = ScreenConsentState
    public var state: State
    /// The display channel asking (nil for `requestPermission`).
    public var channel: ChannelID?
    /// The monitor asked for, and the one shared (when they are known).
    public var monitor: String?
    public var sharedMonitor: String?
    public var reason: String

    public init(state: State, channel: ChannelID?, monitor: String?, sharedMonitor: String? = nil, reason: String) {
        self.state = state
        self.channel = channel
        self.monitor = monitor
        self.sharedMonitor = sharedMonitor
        self.reason = reason
    }
}

/// Consent to share a monitor through the ScreenCast portal, asked once: the restore token
/// the portal returns is kept per monitor (`RestoreTokenStore`) and passed back next time,
/// so later sessions, a restarted daemon and the next boot start without a dialog; every
/// Start returns a new token, which replaces the spent one.
enum ScreenConsent {
    /// A started screencast of one monitor.
    struct Grant {
        let screenCast: PortalScreenCast
        let stream: PortalStream
        /// The monitor the user shared, when it could be identified.
        let shared: MonitorInfo?
    }

    /// Starts a screencast of `monitor` (nil: whichever the user picks, for
    /// `requestPermission`), asking the user only when no kept token restores a choice.
    /// `monitors` are the desktop's monitors now, to tell which one was shared. Throws
    /// PERMISSION_DENIED (declined), TIMEOUT (nobody answered), MONITOR_MISMATCH (another
    /// monitor was shared), DISPLAY_UNAVAILABLE (no portal).
    static func start(portal: ScreenCastPortal, monitor: MonitorInfo?, monitors: [MonitorInfo], store: RestoreTokenStore,
                      cursor: PortalCursorMode, deadline: Int64, wakeup: Wakeup?, abandon: () -> Bool = { true },
                      channel: ChannelID?,
                      onEvent: (ScreenConsentEvent) -> Void) throws(CaptureError) -> Grant {
        let wanted = monitor ?? monitors.first(where: \.isPrimary) ?? monitors.first
        let kept = wanted.flatMap { store.token(for: $0.name) }
        var dialogExpected = true
        if let kept {
            if portal.canRestore(kept) {
                dialogExpected = false
            } else {
                onEvent(ScreenConsentEvent(state: .asking, channel: channel, monitor: wanted?.name,
                                           reason: "the kept consent no longer restores (revoked, or the portal forgot it); the desktop asks again"))
            }
        } else {
            onEvent(ScreenConsentEvent(state: .asking, channel: channel, monitor: wanted?.name,
                                       reason: portal.canPersist ? "no consent kept for this monitor yet" : "this portal (version \(portal.version)) cannot remember a choice; it asks every time"))
        }
        let screenCast: PortalScreenCast
        do {
            screenCast = try portal.selectMonitor(cursorMode: cursor, restoreToken: kept, deadline: deadline, wakeup: wakeup,
                                                  abandon: abandon)
        } catch {
            switch error.code {
            case .permissionDenied:
                onEvent(ScreenConsentEvent(state: .denied, channel: channel, monitor: wanted?.name, reason: error.message))
            case .timeout:
                onEvent(ScreenConsentEvent(state: .timedOut, channel: channel, monitor: wanted?.name, reason: error.message))
            default:
                break
            }
            throw error
        }
        let stream = screenCast.streams[0]
        let shared = identify(stream, among: monitors, wanted: wanted)
        // The new token restores what the user actually shared, so it is kept under that
        // monitor (the asked-for one when the portal does not say); the one passed in is
        // spent either way.
        let owner = shared?.name ?? (stream.size == nil ? wanted?.name : nil)
        if let owner {
            do {
                try store.save(screenCast.restoreToken, for: owner)
            } catch {
                onEvent(ScreenConsentEvent(state: .granted, channel: channel, monitor: owner,
                                           reason: "consent given, but it cannot be kept for next time: \(error.message)"))
            }
        }
        if let monitor, let shared, shared.name != monitor.name {
            screenCast.close()
            let reason = "the monitor shared in the dialog is \(Self.describe(shared)), not \(channel.map { "\($0) " } ?? "")\(Self.describe(monitor)); nothing is recorded from it: start again and pick \(monitor.name) in the dialog"
            onEvent(ScreenConsentEvent(state: .mismatch, channel: channel, monitor: monitor.name, sharedMonitor: shared.name, reason: reason))
            throw CaptureError(.monitorMismatch, reason)
        }
        if let monitor, shared == nil, let size = stream.size {
            screenCast.close()
            let place = stream.position.map { "+\($0.x)+\($0.y)" } ?? ""
            let reason = "the shared stream (\(size.width)x\(size.height)\(place)) is none of this desktop's monitors; nothing is recorded from it"
            onEvent(ScreenConsentEvent(state: .mismatch, channel: channel, monitor: monitor.name, reason: reason))
            throw CaptureError(.monitorMismatch, reason)
        }
        onEvent(ScreenConsentEvent(state: dialogExpected ? .granted : .restored, channel: channel, monitor: wanted?.name,
                                   sharedMonitor: shared?.name ?? owner,
                                   reason: dialogExpected ? "shared in the desktop's dialog" : "the kept consent restored the earlier choice"))
        return Grant(screenCast: screenCast, stream: stream, shared: shared)
    }

    /// The monitor a stream shows: the one at the stream's position with its size (logical
    /// coordinates, as the portal reports them). A portal that gives the size only (KDE's)
    /// identifies it by size: the one monitor of that size, or `wanted` when several share
    /// it. Nil when the portal says neither, or no monitor fits.
    static func identify(_ stream: PortalStream, among monitors: [MonitorInfo], wanted: MonitorInfo?) -> MonitorInfo? {
        guard let s = stream.size else { return nil }
        if let p = stream.position {
            return monitors.first { $0.x == p.x && $0.y == p.y && $0.width == s.width && $0.height == s.height }
        }
        let sameSize = monitors.filter { $0.width == s.width && $0.height == s.height }
        if let wanted, sameSize.contains(where: { $0.name == wanted.name }) { return wanted }
        return sameSize.count == 1 ? sameSize[0] : nil
    }

    static func describe(_ m: MonitorInfo) -> String {
        "\(m.name) (\(m.width)x\(m.height)+\(m.x)+\(m.y))"
    }
}

/// `requestPermission` for the screen on a Wayland desktop: the portal's consent, asked once.
public enum ScreenPermission {
    public enum Outcome: Sendable, Equatable {
        /// Shared (in the dialog, or restored from a kept token): the monitor, when known.
        case granted(monitor: String?)
        case denied(CaptureError)
    }

    /// Asks the desktop (its dialog, unless a kept token restores an earlier choice) for the
    /// primary monitor or whichever the user picks, keeps the new restore token and ends the
    /// screencast at once: a later start of that monitor needs no dialog. Blocks until the
    /// user answered or `consentTimeout` passed.
    public static func request(consentTimeout: Duration, drawCursor: Bool,
                               store: RestoreTokenStore = RestoreTokenStore.standard(),
                               onEvent: (ScreenConsentEvent) -> Void) -> Outcome {
        do throws(CaptureError) {
            let wayland = try WaylandConnection()
            let bus = try SessionBus()
            let portal = try ScreenCastPortal(bus: bus)
            let monitors = WaylandOutput.numbered(wayland.outputs, primary: PrimaryMonitor.connector(bus: bus))
            let grant = try ScreenConsent.start(portal: portal, monitor: nil, monitors: monitors, store: store,
                                                cursor: portal.cursorMode(drawCursor: drawCursor),
                                                deadline: MonotonicClock.now() + consentTimeout.nanoseconds, wakeup: nil, channel: nil,
                                                onEvent: onEvent)
            grant.screenCast.close()
            return .granted(monitor: grant.shared?.name)
        } catch {
            return .denied(error)
        }
    }
}
