import CaptureCore
import CaptureConcurrency
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
import Synchronization

/// Following the monitor when the screen layout changes under a running session: the source
/// says something may have changed (RandR events on X11; a stream that renegotiated, ended or
/// came back on Wayland), the capture thread looks its monitor up again and goes on capturing
/// it where it is now, at its new size (the encoder scales the picture into the stream's
/// size), shows black while it is off, and takes it up again when it is back. Only the
/// display server itself going away ends the channel.
extension VideoChannel {
    /// What the capture thread knows about its monitor (capture thread only).
    struct DisplayState {
        /// The monitor as last seen.
        var tracked: MonitorInfo
        /// Turned off or unplugged: black frames until it is back.
        var offline = false
        /// A pool slot popped for a grab that failed, used for the next grab (the capture side
        /// may only pop from `free`; the encoder pushes).
        var spareSlot: Int?
        /// Look at the layout again at this slot even without an event: new
        /// images could not be made yet (the screen was still being resized), or a grab
        /// failed. `.max`: no need.
        var lookAgainAt = MediaTime.max
    }

    /// How soon to look again when the layout could not be followed yet.
    static let layoutRetry = MediaTime(nanoseconds: 250_000_000)

    /// Looks the monitor up again; returns true when the next frame must be grabbed whole.
    /// Throws only when the display server went away.
    func followLayout(_ source: any ScreenSource, _ display: inout DisplayState, at slot: MediaTime) throws(CaptureError) -> Bool {
        display.lookAgainAt = .max
        switch try source.lookAtMonitor(display.tracked) {
        case .unchanged(let now):
            display.tracked = now
            guard display.offline else { return false }
            // Back where it was: the images still fit.
            display.offline = false
            source.invalidate()
            report(.restored, now, pictureWidth: source.width, pictureHeight: source.height, at: slot)
            return true
        case .changed(let now, let width, let height):
            do {
                try replaceImages(source, &display, for: now, width: width, height: height)
            } catch where source.isAlive {
                // The root window has not grown to the new layout yet, or the monitor moved
                // again: keep what we have and look again shortly.
                logger.debug("cannot follow the monitor yet", metadata: ["channel": "\(id)", "error": "\(error)"])
                display.lookAgainAt = slot + Self.layoutRetry
                return false
            }
            let wasOffline = display.offline
            display.offline = false
            display.tracked = now
            stats.layoutChanges.add(1, ordering: .relaxed)
            report(wasOffline ? .restored : .changed, now, pictureWidth: width, pictureHeight: height, at: slot)
            return true
        case .lost:
            guard !display.offline else { return false }
            display.offline = true
            report(.lost, display.tracked, pictureWidth: source.width, pictureHeight: source.height, at: slot)
            return false
        }
    }

    /// Swaps in images of the monitor's new size. The encoder may still be converting a frame
    /// from the old images: wait until every pool slot is back, hand the new images over with a
    /// `.reconfigure` item (the encoder takes them before the next frame), then let the old
    /// ones go.
    private func replaceImages(_ source: any ScreenSource, _ display: inout DisplayState, for monitor: MonitorInfo,
                               width: Int, height: Int) throws(CaptureError) {
        let pool = source.poolSize
        let spare = display.spareSlot == nil ? 0 : 1
        wakeup?.wake()
        guard encoderFreed.wait(deadlineNs: MonotonicClock.now() + 2_000_000_000, { free.count + spare >= pool }) else {
            throw CaptureError(.internalError, "the encoder did not hand back the frame images within 2 s")
        }
        try source.replaceImages(for: monitor, width: width, height: height)
        nextSlots.withLock { $0 = Self.slots(of: source) }
        let item = FrameItem(kind: .reconfigure, slot: -1, pts: .zero, dirty: DirtyRegion(),
                             width: Int32(source.width), height: Int32(source.height))
        _ = encoderFreed.wait { filled.push(item) }
        wakeup?.wake()
    }

    private func report(_ kind: DisplayChange.Kind, _ monitor: MonitorInfo, pictureWidth: Int, pictureHeight: Int, at slot: MediaTime) {
        let picture = VideoEncoder.fit(sourceWidth: pictureWidth, sourceHeight: pictureHeight,
                                       into: outputSize.width, outputSize.height)
        let change = DisplayChange(channel: id, kind: kind, monitor: monitor, outputWidth: outputSize.width,
                                   outputHeight: outputSize.height, picture: picture, atNs: slot.nanoseconds)
        logger.notice(kind == .lost ? "monitor gone; recording black until it is back" : "monitor changed; capturing it as it is now",
                      metadata: ["channel": "\(id)", "change": "\(kind.rawValue)",
                                 "monitor": "\(monitor.name) \(monitor.width)x\(monitor.height)+\(monitor.x)+\(monitor.y)",
                                 "picture": "\(picture)"])
        onDisplayChange(change)
    }
}
