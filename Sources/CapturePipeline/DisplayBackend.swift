import CaptureCore
#if canImport(Glibc)
import Glibc
#endif

/// Which display server a display channel records: the `display_backend` setting and the
/// `record --display-backend` option.
public enum DisplayBackendSetting: String, Sendable, CaseIterable, Codable {
    /// Wayland in a Wayland session (WAYLAND_DISPLAY, or XDG_SESSION_TYPE=wayland), X11 otherwise.
    case auto
    /// The X server of `display` / $DISPLAY (in a Wayland session: XWayland, X11 windows only).
    case x11
    /// The compositor's ScreenCast portal and PipeWire.
    case wayland
}

/// The backend that serves display channels, and why (shown by `channels`, `getChannels`
/// and `getStatus`).
public struct DisplayBackendChoice: Sendable, Equatable, Codable {
    public enum Backend: String, Sendable, Codable {
        case x11, wayland
    }
    public var backend: Backend
    public var reason: String

    public init(backend: Backend, reason: String) {
        self.backend = backend
        self.reason = reason
    }

    /// Applies the setting to the session's environment. In a Wayland session the XWayland
    /// DISPLAY is not used unless `x11` is asked for: it would show X11 windows only.
    public static func resolve(_ setting: DisplayBackendSetting, x11Display: String?,
                               environment: [String: String]) -> DisplayBackendChoice {
        let waylandDisplay = environment["WAYLAND_DISPLAY"].flatMap { $0.isEmpty ? nil : $0 }
        let sessionType = environment["XDG_SESSION_TYPE"]?.lowercased()
        let xDisplay = x11Display ?? environment["DISPLAY"].flatMap { $0.isEmpty ? nil : $0 }
        switch setting {
        case .x11:
            return DisplayBackendChoice(backend: .x11, reason: "display_backend is x11" + (xDisplay.map { " (X display \($0))" } ?? ""))
        case .wayland:
            return DisplayBackendChoice(backend: .wayland, reason: "display_backend is wayland (the ScreenCast portal and PipeWire)")
        case .auto:
            if let waylandDisplay {
                return DisplayBackendChoice(backend: .wayland,
                    reason: "a Wayland session (WAYLAND_DISPLAY=\(waylandDisplay)): the ScreenCast portal and PipeWire" + (xDisplay.map { "; XWayland's DISPLAY \($0) is not used (it shows X11 windows only: display_backend = \"x11\" to use it anyway)" } ?? ""))
            }
            if sessionType == "wayland" {
                return DisplayBackendChoice(backend: .wayland,
                    reason: "a Wayland session (XDG_SESSION_TYPE=wayland): the ScreenCast portal and PipeWire")
            }
            // No Wayland session: X11, as before there was a Wayland backend (without DISPLAY the
            // X11 backend says what to set).
            return DisplayBackendChoice(backend: .x11, reason: xDisplay.map { "an X11 session (DISPLAY=\($0), no WAYLAND_DISPLAY)" }
                ?? "no Wayland session (WAYLAND_DISPLAY is not set) and no X display (DISPLAY is not set)")
        }
    }

    /// From the process's own environment.
    public static func resolve(_ setting: DisplayBackendSetting, x11Display: String?) -> DisplayBackendChoice {
        var environment: [String: String] = [:]
        for name in ["WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "DISPLAY"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return resolve(setting, x11Display: x11Display, environment: environment)
    }
}
