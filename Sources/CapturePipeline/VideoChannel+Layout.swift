import CaptureCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Logging
import MediaEncoding
import X11Capture

/// Following the monitor when the screen layout changes under a running session: RandR says
/// something changed, the capture thread looks up its monitor again (by name) and goes on
/// capturing it where it is now, at its new size (the encoder scales the picture into the
/// stream's size), shows black while it is off, and takes it up again when it is back. Only the
/// X server going away ends the channel.
extension VideoChannel {
    /// What the capture thread knows about its monitor (capture thread only).
    struct DisplayState {
        var grabber: ScreenGrabber
        /// The monitor as last seen.
        var tracked: MonitorInfo
        /// Turned off or unplugged: black frames until it is back.
        var offline = false
        /// A pool slot popped for a grab that failed, used for the next grab (the capture side
        /// may only pop from `free`; the encoder pushes).
        var spareSlot: Int?
        /// Look at the layout again at this slot (ns on the timeline) even without an event: a
        /// new grabber could not be made yet (the screen was still being resized), or a grab
        /// failed. `.max`: no need.
        var lookAgainAt: Int64 = .max
    }

    /// How soon to look again when the layout could not be followed yet.
    static let layoutRetryNs: Int64 = 250_000_000

    /// Looks the monitor up again; returns true when the next frame must be grabbed whole.
    /// Throws only when the X server went away.
    func followLayout(_ display: inout DisplayState, atNs slot: Int64) throws(CaptureError) -> Bool {
        display.lookAgainAt = .max
        let monitors = try display.grabber.connection.monitors()
        switch MonitorTracking.follow(display.tracked, in: monitors) {
        case .unchanged(let now):
            display.tracked = now
            guard display.offline else { return false }
            // Back where it was: the grabber's images still fit.
            display.offline = false
            display.grabber.invalidate()
            report(.restored, now, atNs: slot)
            return true
        case .changed(let now):
            do {
                try replaceGrabber(&display, for: now)
            } catch where display.grabber.connection.isAlive {
                // The root window has not grown to the new layout yet, or the monitor moved
                // again: keep what we have and look again shortly.
                logger.debug("cannot follow the monitor yet", metadata: ["channel": "\(id)", "error": "\(error)"])
                display.lookAgainAt = slot + Self.layoutRetryNs
                return false
            }
            let wasOffline = display.offline
            display.offline = false
            display.tracked = now
            stats.layoutChanges.add(1, ordering: .relaxed)
            report(wasOffline ? .restored : .changed, now, atNs: slot)
            return true
        case .lost:
            guard !display.offline else { return false }
            display.offline = true
            report(.lost, display.tracked, atNs: slot)
            return false
        }
    }

    /// Swaps in a grabber for the monitor's new rectangle. The encoder may still be converting a
    /// frame from the old images: wait until every pool slot is back, hand the new images over
    /// with a `.reconfigure` item (the encoder takes them before the next frame), then let the
    /// old grabber go.
    private func replaceGrabber(_ display: inout DisplayState, for monitor: MonitorInfo) throws(CaptureError) {
        let pool = display.grabber.poolSize
        let deadline = MonotonicClock.now() + 2_000_000_000
        while free.count + (display.spareSlot == nil ? 0 : 1) < pool {
            if MonotonicClock.now() > deadline {
                throw CaptureError(.internalError, "the encoder did not hand back the frame images within 2 s")
            }
            usleep(500)
        }
        let next = try ScreenGrabber(connection: display.grabber.connection, region: monitor, poolSize: pool,
                                     drawCursor: options.drawCursor)
        nextSlots.withLock { $0 = Self.slots(of: next) }
        let item = FrameItem(kind: .reconfigure, slot: -1, ptsNs: 0, dirty: DirtyRegion(),
                             width: Int32(monitor.width), height: Int32(monitor.height))
        while !filled.push(item) { usleep(500) }
        wakeup?.wake()
        display.grabber = next
    }

    private func report(_ kind: DisplayChange.Kind, _ monitor: MonitorInfo, atNs: Int64) {
        let picture = VideoEncoder.fit(sourceWidth: monitor.width, sourceHeight: monitor.height,
                                       into: outputSize.width, outputSize.height)
        let change = DisplayChange(channel: id, kind: kind, monitor: monitor, outputWidth: outputSize.width,
                                   outputHeight: outputSize.height, picture: picture, atNs: atNs)
        logger.notice(kind == .lost ? "monitor gone; recording black until it is back" : "monitor changed; capturing it as it is now",
                      metadata: ["channel": "\(id)", "change": "\(kind.rawValue)",
                                 "monitor": "\(monitor.name) \(monitor.width)x\(monitor.height)+\(monitor.x)+\(monitor.y)",
                                 "picture": "\(picture)"])
        onDisplayChange(change)
    }
}
