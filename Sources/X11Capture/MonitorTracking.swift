public import CaptureCore

/// Which of the monitors RandR lists now is the one a display channel has been capturing, after
/// the screen layout changed (a mode change, a monitor moved, turned off, plugged in).
///
/// A monitor is followed by its RandR name ("DUMMY0", "HDMI-1", "eDP-1"): indices shift when
/// monitors come and go, positions and sizes change with the layout, the name stays. A server
/// without RandR monitors reports the whole root window as "screen", which is always there.
public enum MonitorTracking {
    public enum Change: Equatable, Sendable {
        /// Still there, same place and size (another monitor changed).
        case unchanged(MonitorInfo)
        /// Still there, at another position or with another size.
        case changed(MonitorInfo)
        /// Not among the active monitors: turned off or unplugged.
        case lost
    }

    public static func follow(_ tracked: MonitorInfo, in monitors: [MonitorInfo]) -> Change {
        guard let now = monitors.first(where: { $0.name == tracked.name }) else { return .lost }
        return now.rect == tracked.rect ? .unchanged(now) : .changed(now)
    }
}
