import CaptureCore
#if canImport(Glibc)
import Glibc
#endif
import Logging
import PipeWireCapture
import PixelConversion
import ScreenCastPortal
import WaylandOutputs
import Synchronization
import MediaEncoding

/// A monitor of a Wayland desktop: its ScreenCast portal stream, consumed from PipeWire
/// (`ScreenCastKeeper` keeps it going), copied into a pool of images the way the X11 grabber
/// fills its XShm images, so the rest of the channel cannot tell the difference.
///
/// The compositor sends a frame only when something changed (a still screen: none at all),
/// with damage rectangles; each grab copies only what changed into the pool image, and every
/// image stays a complete, exact picture: what an image missed while other images were
/// filled is remembered (`stale`) and copied in when it is next used. The pointer comes as
/// stream metadata and is drawn here, as XFixes' is on X11 (or by the compositor when it
/// offers no metadata).
///
/// Capture thread only (like `X11ScreenSource`); the keeper and PipeWire run their own threads.
final class WaylandScreenSource: ScreenSource {
    private let channel: ChannelID
    private let wayland: WaylandConnection
    private let keeper: ScreenCastKeeper
    private let logger: Logger
    private let stats: ChannelStats
    private var stream: PipeWireScreenStream?
    /// The counts of earlier streams of this channel (a resumed screencast starts from zero).
    private var sourceFramesBefore = 0
    private var supersededBefore = 0
    /// Outcomes of the keeper seen so far.
    private var keeperGeneration = 0
    private var images: [UnsafeMutableRawPointer] = []
    private(set) var width = 0
    private(set) var height = 0
    private var bytesPerRow = 0
    let poolSize: Int
    /// The frame grid's period.
    private let periodNs: Int64
    let warnings: [String] = []
    private(set) var isAlive = true

    /// Per image: what it lacks of the current picture, and where its pointer was drawn.
    private var stale: [DirtyRegion] = []
    private var drawnCursor: [PixelRect] = []
    private var lastCursorRect = PixelRect.zero
    private var lastCursorSerial = -1
    private var needsFull = true
    /// The stream's cursor-change counter at the last grab, and its change counter at the last
    /// look at its format.
    private var seenCursorChanges = -1
    private var seenLayoutChanges = -1
    private var seenFormatGeneration = 0
    private var outputsChanged = false
    /// After the stream ended: when to ask the keeper for a new one, and the wait after that.
    private var reconnectAt: Int64?
    private var reconnectBackoffNs = WaylandScreenSource.firstBackoffNs
    /// The keeper was refused for good (declined, nobody answered, the wrong monitor).
    private var givenUp = false
    private var endLogged = false

    static let firstBackoffNs: Int64 = 500_000_000
    static let maxBackoffNs: Int64 = 10_000_000_000

    init(channel: ChannelID, monitor: MonitorInfo, options: RecordingOptions, logger: Logger, stats: ChannelStats,
         cancellation: StartCancellation, onConsent: @escaping @Sendable (ScreenConsentEvent) -> Void) throws(CaptureError) {
        self.channel = channel
        self.logger = logger
        self.stats = stats
        stats.sourceFrames.store(0, ordering: .relaxed)
        stats.sourceFramesSuperseded.store(0, ordering: .relaxed)
        poolSize = options.framePoolSize
        periodNs = 1_000_000_000 / Int64(options.video.fps)
        wayland = try WaylandConnection()
        let consentTimeoutNs = options.screenConsentTimeout.nanoseconds
        keeper = try ScreenCastKeeper(channel: channel, fps: options.video.fps, drawCursor: options.drawCursor,
                                      consentTimeoutNs: consentTimeoutNs,
                                      store: options.restoreTokens ?? RestoreTokenStore.standard(), logger: logger,
                                      onConsent: onConsent)
        keeper.connect(.init(monitor: monitor, monitors: WaylandOutput.numbered(wayland.outputs)))
        cancellation.onCancel { [keeper] in keeper.cancel() }
        let deadline = MonotonicClock.now() + consentTimeoutNs + ScreenCastKeeper.firstFrameTimeoutNs + 5_000_000_000
        switch keeper.waitForOutcome(after: 0, deadline: deadline) {
        case .streaming(let stream, let format):
            keeperGeneration = keeper.generation
            self.stream = stream
            allocateImages(width: format.width, height: format.height)
            seenFormatGeneration = stream.status.generation
        case .failed(let error):
            keeper.stop()
            if cancellation.isCancelled {
                throw CaptureError(.invalidState, "the start was cancelled (the session was stopped) before the screencast of \(monitor.name) began; nothing was recorded")
            }
            throw error
        case nil:
            keeper.stop()
            throw CaptureError(.timeout, "the screencast of \(monitor.name) did not start in time")
        }
    }

    deinit {
        if let stream {
            let c = stream.counters
            let timed = max(1, c.received - c.untimed)
            logger.info("screencast counters", metadata: [
                "channel": "\(channel)", "received": "\(c.received)", "superseded": "\(c.superseded)",
                "cursorOnly": "\(c.cursorOnly)", "unusable": "\(c.unusable)", "untimed": "\(c.untimed)", "late": "\(c.late)", "beforeStart": "\(c.beforeStart)",
                "latencyMeanMs": "\(Double(c.deliveryLatencySumNs / Int64(timed)) / 1e6)",
                "latencyMaxMs": "\(Double(c.deliveryLatencyMaxNs) / 1e6)",
            ])
        }
        // The stream first, then the portal's session: closed the other way round, the
        // compositor tears the node down under a connected stream and floods its loop with
        // callbacks just as it is destroyed.
        stream = nil
        keeper.stop()
        for image in images { free(image) }
    }

    func pixels(slot: Int) -> PixelBufferView {
        PixelBufferView(baseAddress: images[slot], width: width, height: height, bytesPerRow: bytesPerRow)
    }

    func pollChanges(slotTimeNs: Int64) throws(CaptureError) -> Bool {
        do {
            if try wayland.dispatchPending() { outputsChanged = true }
        } catch {
            isAlive = false
            throw error
        }
        guard let stream else { return false }
        // Two atomic loads: a frame made by the slot's time waits, or the pointer changed.
        return needsFull || stream.oldestPendingTimeNs <= slotTimeNs || stream.cursorChangeCount != seenCursorChanges
    }

    /// Frames reach us 35-45 ms after mutter made them (measured: its pts, on CLOCK_MONOTONIC,
    /// to our process callback), more on a busy machine: a slot is decided this long after its
    /// time, so the frame made by then is there and lands in its own slot, not a later one. A
    /// frame later than that still lands in the next slot decided (counted: `late`).
    static let frameDelay: Int64 = 100_000_000
    var frameDelayNs: Int64 { Self.frameDelay }

    func grab(into slot: Int, slotTimeNs: Int64) throws(CaptureError) -> DirtyRegion {
        guard let stream else { return DirtyRegion() }
        seenCursorChanges = stream.cursorChangeCount
        let changed = stream.withFrame(notAfter: slotTimeNs, periodNs: periodNs) { view in
            stats.sourceFrames.store(sourceFramesBefore + view.counters.received - view.counters.beforeStart, ordering: .relaxed)
            stats.sourceFramesSuperseded.store(supersededBefore + view.counters.superseded, ordering: .relaxed)
            guard let frame = view.frame, frame.width == width, frame.height == height else {
                // No picture yet, or the stream already renegotiated a new size (the channel
                // follows it on its next look at the layout): keep what the image has.
                return DirtyRegion()
            }
            return copy(frame, advanced: view.advanced, cursor: view.cursor, into: slot)
        }
        return changed
    }

    /// Copies into image `slot` what it lacks of `frame`, draws the pointer, and returns what
    /// changed since the previous grab.
    private func copy(_ frame: StreamFrame, advanced: Bool, cursor: StreamCursor?, into slot: Int) -> DirtyRegion {
        let whole = PixelRect(x: 0, y: 0, width: width, height: height)
        var changed = DirtyRegion()
        if needsFull {
            changed.add(whole)
        } else if advanced {
            changed = frame.damage ?? .full(width: width, height: height)
        }
        var cursorRect = PixelRect.zero
        if let cursor, cursor.visible {
            cursorRect = PixelRect(x: cursor.x, y: cursor.y, width: cursor.width, height: cursor.height).intersection(whole)
        }
        let serial = cursor?.imageSerial ?? -1
        if cursorRect != lastCursorRect || (serial != lastCursorSerial && !cursorRect.isEmpty) {
            changed.add(lastCursorRect)
            changed.add(cursorRect)
        }
        var refresh = changed
        refresh.formUnion(stale[slot])
        refresh.add(drawnCursor[slot])
        refresh.add(cursorRect)
        let image = images[slot]
        for i in 0..<refresh.count {
            let r = refresh[i].intersection(whole)
            if r.isEmpty { continue }
            PixelBlit.copy(from: frame.pixels + Int(r.y) * frame.bytesPerRow + Int(r.x) * 4, sourceBytesPerRow: frame.bytesPerRow,
                           to: image + Int(r.y) * bytesPerRow + Int(r.x) * 4, destinationBytesPerRow: bytesPerRow,
                           width: Int(r.width), height: Int(r.height), swapRedBlue: frame.pixelFormat == .rgbx)
        }
        if let cursor, !cursorRect.isEmpty {
            PixelBlit.blendPremultiplied(cursor.image, imageWidth: cursor.width, imageHeight: cursor.height,
                                         atX: cursor.x, y: cursor.y, over: image, pictureBytesPerRow: bytesPerRow,
                                         pictureWidth: width, pictureHeight: height)
        }
        drawnCursor[slot] = cursorRect
        for other in stale.indices where other != slot { stale[other].formUnion(changed) }
        stale[slot].removeAll()
        lastCursorRect = cursorRect
        lastCursorSerial = serial
        needsFull = false
        return changed
    }

    func invalidate() { needsFull = true }

    // MARK: Layout: new sizes, the stream's end, reconnecting

    func layoutMayHaveChanged() -> Bool {
        if keeper.generation != keeperGeneration { return true }
        if outputsChanged {
            outputsChanged = false
            return true
        }
        if let stream {
            let changes = stream.changeCount
            if changes != seenLayoutChanges {
                seenLayoutChanges = changes
                let status = stream.status
                if status.generation != seenFormatGeneration || status.ended != nil { return true }
            }
        } else if let reconnectAt, !givenUp, MonotonicClock.now() >= reconnectAt {
            return true
        }
        return false
    }

    func lookAtMonitor(_ tracked: MonitorInfo) throws(CaptureError) -> ScreenLook {
        adoptKeeperOutcome()
        let present = wayland.outputs.first { $0.name == tracked.name }
        if let stream, let end = stream.status.ended {
            if !endLogged {
                logger.notice("screencast ended; recording black until it is back", metadata: [
                    "channel": "\(channel)", "reason": "\(end)"])
                endLogged = true
            }
            retireCounters(of: stream)
            self.stream = nil
            reconnectAt = MonotonicClock.now() + reconnectBackoffNs
        }
        guard let present else { return .lost }
        let now = MonitorInfo(index: tracked.index, name: present.name, x: present.x, y: present.y,
                              width: present.width, height: present.height, isPrimary: tracked.isPrimary)
        guard let stream else {
            requestReconnect(now)
            return .lost
        }
        let status = stream.status
        seenFormatGeneration = status.generation
        guard let format = status.format else { return .lost }
        if format.width != width || format.height != height {
            return .changed(now, width: format.width, height: format.height)
        }
        return .unchanged(now)
    }

    func replaceImages(for monitor: MonitorInfo, width: Int, height: Int) throws(CaptureError) {
        allocateImages(width: width, height: height)
    }

    /// Takes a new stream (or a refusal) the keeper published.
    private func adoptKeeperOutcome() {
        guard keeper.generation != keeperGeneration else { return }
        keeperGeneration = keeper.generation
        switch keeper.take() {
        case .streaming(let stream, _):
            if let old = self.stream { retireCounters(of: old) }
            self.stream = stream
            seenCursorChanges = -1
            seenLayoutChanges = -1
            needsFull = true
            endLogged = false
            reconnectAt = nil
            reconnectBackoffNs = Self.firstBackoffNs
        case .failed(let error):
            switch error.code {
            case .permissionDenied, .timeout, .monitorMismatch:
                // The user said no (or nobody is there): no dialog again in this session.
                givenUp = true
                logger.warning("screencast not resumed; recording black for the rest of the session",
                               metadata: ["channel": "\(channel)", "error": "\(error)"])
            default:
                logger.notice("screencast not back yet", metadata: ["channel": "\(channel)", "error": "\(error)"])
                reconnectAt = MonotonicClock.now() + reconnectBackoffNs
                reconnectBackoffNs = min(reconnectBackoffNs * 2, Self.maxBackoffNs)
            }
        case nil:
            break
        }
    }

    /// Keeps the counts of a stream that is let go (the next one counts from zero).
    private func retireCounters(of stream: PipeWireScreenStream) {
        let counters = stream.counters
        // As counted while it ran: frames made before its first slot are not the session's.
        sourceFramesBefore += counters.received - counters.beforeStart
        supersededBefore += counters.superseded
    }

    /// Asks the keeper for a new screencast once the wait is over (and the monitor is there).
    private func requestReconnect(_ monitor: MonitorInfo) {
        guard !givenUp, !keeper.busy else { return }
        let due = reconnectAt ?? 0
        guard MonotonicClock.now() >= due else { return }
        reconnectAt = MonotonicClock.now() + reconnectBackoffNs
        keeper.connect(.init(monitor: monitor, monitors: WaylandOutput.numbered(wayland.outputs)))
    }

    private func allocateImages(width: Int, height: Int) {
        for image in images { free(image) }
        images.removeAll()
        self.width = width
        self.height = height
        bytesPerRow = (width * 4 + 63) & ~63
        for _ in 0..<poolSize {
            var p: UnsafeMutableRawPointer?
            precondition(posix_memalign(&p, 64, bytesPerRow * height) == 0, "out of memory for a \(width)x\(height) image")
            memset(p!, 0, bytesPerRow * height)
            images.append(p!)
        }
        stale = Array(repeating: .full(width: width, height: height), count: poolSize)
        drawnCursor = Array(repeating: .zero, count: poolSize)
        lastCursorRect = .zero
        needsFull = true
    }
}
