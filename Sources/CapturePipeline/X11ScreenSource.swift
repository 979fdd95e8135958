import CaptureCore
import X11Capture

/// A monitor of an X server: the capture thread's own `X11Connection` (which also watches
/// RandR for layout changes) and a `ScreenGrabber` over the monitor's rectangle, replaced by
/// a new one when the monitor changes size or place.
final class X11ScreenSource: ScreenSource {
    let connection: X11Connection
    private(set) var grabber: ScreenGrabber
    private let drawCursor: Bool

    init(displayName: String?, monitor: MonitorInfo, poolSize: Int, drawCursor: Bool) throws(CaptureError) {
        connection = try X11Connection(displayName: displayName)
        try connection.watchScreenLayout()
        grabber = try ScreenGrabber(connection: connection, region: monitor, poolSize: poolSize, drawCursor: drawCursor)
        self.drawCursor = drawCursor
    }

    var width: Int { grabber.width }
    var height: Int { grabber.height }
    var poolSize: Int { grabber.poolSize }
    var warnings: [String] { grabber.warnings }
    var isAlive: Bool { connection.isAlive }

    func pixels(slot: Int) -> PixelBufferView { grabber.pixels(slot: slot) }
    func pollChanges(slotTimeNs: Int64) throws(CaptureError) -> Bool { try grabber.pollChanges() }
    func grab(into slot: Int, slotTimeNs: Int64) throws(CaptureError) -> DirtyRegion { try grabber.grab(into: slot) }
    /// XShm reads the screen as it is when the grab runs.
    var frameDelayNs: Int64 { 0 }
    func invalidate() { grabber.invalidate() }
    func layoutMayHaveChanged() -> Bool { connection.takeLayoutChange() }

    func lookAtMonitor(_ tracked: MonitorInfo) throws(CaptureError) -> ScreenLook {
        switch MonitorTracking.follow(tracked, in: try connection.monitors()) {
        case .unchanged(let now): .unchanged(now)
        case .changed(let now): .changed(now, width: now.width, height: now.height)
        case .lost: .lost
        }
    }

    func replaceImages(for monitor: MonitorInfo, width: Int, height: Int) throws(CaptureError) {
        grabber = try ScreenGrabber(connection: connection, region: monitor, poolSize: grabber.poolSize, drawCursor: drawCursor)
    }
}
