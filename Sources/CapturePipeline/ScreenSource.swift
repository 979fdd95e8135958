import CaptureCore

/// Where a display channel's pictures come from: X11 (`X11ScreenSource`: XShm, XDamage,
/// XFixes, RandR) or a Wayland desktop (`WaylandScreenSource`: the ScreenCast portal and
/// PipeWire). `VideoChannel`'s capture thread drives either the same way, one frame slot at a
/// time on its grid, without knowing which:
///
///     pollChanges(slotTimeNs:) -> anything new since the last grab? (every slot; cheap)
///     grab(into:)    -> the picture into a pool image + what changed
///     layoutMayHaveChanged / lookAtMonitor / replaceImages        (the monitor changed size,
///                                                                   went away or came back)
///
/// A source is made on the capture thread and used only there (not Sendable); the encoder
/// reads the pool's images (`pixels(slot:)`) under the channel's slot hand-over rules.
protocol ScreenSource: AnyObject {
    /// The pool images' size (pixels), which `replaceImages` may change.
    var width: Int { get }
    var height: Int { get }
    /// How many pool images there are.
    var poolSize: Int { get }
    /// Problems that are not fatal, found while setting up (logged once).
    var warnings: [String] { get }
    /// False once the display server itself is gone (the X server, the Wayland compositor):
    /// a failure then ends the channel instead of being taken as a layout change.
    var isAlive: Bool { get }

    /// Memory of pool image `slot` (stable until `replaceImages`; BGRX, 32 bits a pixel).
    func pixels(slot: Int) -> PixelBufferView

    /// True when something in the picture (or the pointer over it) changed since the last
    /// grab, as of the frame slot's time `slotTimeNs`. Never blocks. Throws
    /// DISPLAY_UNAVAILABLE when the display server went away.
    func pollChanges(slotTimeNs: Int64) throws(CaptureError) -> Bool

    /// Fills pool image `slot` with the picture as it was at `slotTimeNs` (CLOCK_MONOTONIC:
    /// the frame slot's time), pointer drawn in, and returns what changed since the previous
    /// grab (any slot; the whole picture for the first grab and after `invalidate()`).
    func grab(into slot: Int, slotTimeNs: Int64) throws(CaptureError) -> DirtyRegion

    /// How long after a frame slot's time the capture thread grabs it: 0 for a source that
    /// shows the screen as it is now (X11); a source whose frames arrive a while after they
    /// were made (a screencast: the compositor paints, PipeWire delivers) is read later, so
    /// the frames made up to the slot's time are there. The timestamps stay on the grid.
    var frameDelayNs: Int64 { get }

    /// The next grab reports the whole picture.
    func invalidate()

    /// True when the monitor may have changed since the last `lookAtMonitor` (an event came,
    /// or the stream renegotiated, ended or came back). Cheap; called every slot.
    func layoutMayHaveChanged() -> Bool

    /// Where the monitor `tracked` is now.
    func lookAtMonitor(_ tracked: MonitorInfo) throws(CaptureError) -> ScreenLook

    /// New pool images for the monitor's new size, once the encoder handed back every old
    /// one. Throws when that is not possible yet (the channel looks again shortly) or, with
    /// `isAlive` false, for good.
    func replaceImages(for look: MonitorInfo, width: Int, height: Int) throws(CaptureError)
}

/// What `lookAtMonitor` found.
enum ScreenLook: Equatable {
    /// Still there, at the same size.
    case unchanged(MonitorInfo)
    /// There, but its pictures are now `width` x `height` (another mode, moved, rotated).
    case changed(MonitorInfo, width: Int, height: Int)
    /// Gone (off, unplugged, its stream ended): black frames until it is back.
    case lost
}
