public import CaptureCore
import CaptureConcurrency
public import CaptureSpool
public import Dispatch
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
public import Glibc
#endif
public import Logging
public import MediaEncoding
public import Synchronization

/// What the capture thread hands the encoder for one frame slot of the timeline.
struct FrameItem: BitwiseCopyable {
    enum Kind: UInt8 {
        case grabbed, repeated, blank, end
        /// The monitor's size or place changed: the encoder takes `nextSlots` (the new images)
        /// and pictures of `width` x `height` from the next item on.
        case reconfigure
    }
    var kind: Kind
    /// Pool slot holding the grabbed pixels (only for `.grabbed`).
    var slot: Int32
    /// The frame slot on the session timeline (the grab happened inside it).
    var pts: MediaTime
    /// What changed since the previous grabbed frame (only for `.grabbed`).
    var dirty: DirtyRegion
    /// The new source size (only for `.reconfigure`).
    var width: Int32 = 0
    var height: Int32 = 0
}

/// A display channel's monitor changed under a running session.
public struct DisplayChange: Sendable {
    public enum Kind: String, Sendable {
        /// Another mode or position: captured on, scaled into the stream's size.
        case changed
        /// Turned off or unplugged: black frames until it is back.
        case lost
        /// Back after `lost`.
        case restored
    }
    public var channel: ChannelID
    public var kind: Kind
    /// The monitor now (the last known one for `lost`).
    public var monitor: MonitorInfo
    /// The stream's size (unchanged) and where the picture lies in it.
    public var outputWidth: Int
    public var outputHeight: Int
    public var picture: PixelRect
    /// When, on the session timeline (ns).
    public var atNs: Int64
}

/// The pixel memory of the source's image pool, readable from the encoder.
///
/// Why `@unchecked Sendable` is sound: the views point into the images of the
/// capture thread's `ScreenSource` (XShm segments, or a screencast's pool), which
/// outlive every use here (the capture thread waits for the encoder to finish
/// before it releases the source, and for every slot to come back before it
/// replaces the images). Each slot is accessed by one side at a time: the capture thread
/// writes slot `i` only after popping `i` from the `free` ring, the encoder
/// reads it only after popping a `FrameItem` naming it from `filled` and before
/// pushing `i` back to `free`; the rings' release/acquire ordering makes each
/// hand-over a happens-before edge.
final class FrameSlots: @unchecked Sendable {
    let views: [PixelBufferView]
    init(_ views: [PixelBufferView]) { self.views = views }
}

/// One `display:N` channel: a capture thread that grabs the monitor on a fixed
/// frame grid, and an encoder queue that converts, encodes and chunks.
///
///     capture thread --filled ring--> encoder queue --ChannelOutlet--> spool writer
///                    <---free ring---
///
/// Why `@unchecked Sendable` is sound: immutable `let`s and atomics aside, the
/// encoder-side state (`encoder`, `chunker`, `lastPts`, `lastChunk`, `failed`)
/// is created in `prepare()` before the wakeup source exists and afterwards is
/// touched only by `drain()`, which runs only on the serial `encodeQueue`.
/// The capture thread's source (X11 or Wayland objects) is a local of the
/// thread's closure and never leaves it.
final class VideoChannel: @unchecked Sendable {
    let id: ChannelID
    let monitor: MonitorInfo
    let stats: ChannelStats
    /// Pausing the screen track: black frames from the pause instant on.
    let pauseGate = PauseGate()
    let options: RecordingOptions
    let logger: Logger
    private let onFailure: @Sendable (CaptureError) -> Void
    let onDisplayChange: @Sendable (DisplayChange) -> Void
    let onConsent: @Sendable (ScreenConsentEvent) -> Void
    private let cancellation: StartCancellation
    private let live = VideoChannel.liveInstances.token()
    static let liveInstances = LiveInstances("VideoChannel")

    let filled = SPSCRing<FrameItem>(capacity: 16)
    let free: SPSCRing<Int>
    /// The encoder took an item (and handed its image back): the capture thread, when it waits
    /// for room (the end marker, a reconfiguration), goes on.
    let encoderFreed = ConditionSignal()
    private let stopRequested = Atomic<Bool>(false)
    /// The end of the timeline (`MediaTime` ns; an atomic holds the raw value): no frame slot at
    /// or after it is taken.
    private let stopAt = Atomic<Int64>(.max)
    private let startTime = Atomic<Int64>(0)
    /// Setup on the capture thread, go or cancel, the encoder's end, the thread's exit.
    private let lifecycle = ChannelLifecycle<FrameSlots>()
    /// The images that replaced the old ones (a new monitor size), for the encoder to take with the
    /// `.reconfigure` item that announces them.
    let nextSlots = Mutex<FrameSlots?>(nil)
    /// The stream's size (set in `prepare`, before the capture loop starts).
    private(set) var outputSize = (width: 0, height: 0)

    private let encodeQueue: DispatchQueue
    private(set) var wakeup: QueueWakeup?
    private var slots: FrameSlots?
    private var encoder: VideoEncoder?
    private var chunker: Chunker<Ticks90k>?
    private var lastPts = Ticks90k(ticks: -1)
    private var lastChunk: Int64 = -1
    private var failed = false
    private let nominalFrameDuration: Ticks90k

    init(id: ChannelID, monitor: MonitorInfo, options: RecordingOptions, logger: Logger,
         onFailure: @escaping @Sendable (CaptureError) -> Void,
         onDisplayChange: @escaping @Sendable (DisplayChange) -> Void = { _ in },
         onConsent: @escaping @Sendable (ScreenConsentEvent) -> Void = { _ in },
         cancellation: StartCancellation = StartCancellation()) {
        self.id = id
        self.cancellation = cancellation
        self.monitor = monitor
        self.options = options
        self.logger = logger
        self.onFailure = onFailure
        self.onDisplayChange = onDisplayChange
        self.onConsent = onConsent
        self.stats = ChannelStats(channel: id)
        self.free = SPSCRing(capacity: options.framePoolSize)
        self.encodeQueue = DispatchQueue(label: "capture-agent.encode.\(id.directoryName)", qos: .userInteractive)
        self.nominalFrameDuration = Ticks90k.framePeriod(fps: options.video.fps)
    }

    /// Opens the screen source (X11, or a Wayland screencast: consent first when needed) and
    /// its image pool on a new capture thread, then the encoder and the spool outlet. Throws
    /// what went wrong; nothing runs yet.
    func prepare(spool: SpoolWriter) throws(CaptureError) {
        guard DetachedThread.start({ [self] in captureThreadMain() }) else {
            throw CaptureError(.internalError, "cannot start the capture thread for \(id)")
        }
        let slots: FrameSlots
        switch lifecycle.awaitSetup() {
        case .failure(let error):
            lifecycle.awaitExit()
            throw error
        case .success(let s):
            slots = s
        }
        self.slots = slots
        for i in 0..<slots.views.count { _ = free.push(i) }
        do throws(CaptureError) {
            // The source's pictures: the monitor's size on X11, the stream's on Wayland (a
            // scaled monitor sends more pixels than its logical size).
            let encoder = try VideoEncoder(sourceWidth: slots.views[0].width, sourceHeight: slots.views[0].height,
                                           settings: options.video)
            let muxer = try TSChunkMuxer(stream: encoder.stream)
            let outlet = try spool.addChannel(id, codec: "h264")
            self.encoder = encoder
            self.outputSize = (encoder.outputWidth, encoder.outputHeight)
            self.chunker = Chunker(muxer: muxer, outlet: outlet, chunkDuration: options.chunkDuration,
                                   nominalPacketDuration: nominalFrameDuration, stats: stats)
            logger.info("video channel ready", metadata: [
                "channel": "\(id)", "monitor": "\(monitor.name) \(monitor.width)x\(monitor.height)+\(monitor.x)+\(monitor.y)",
                "backend": "\(options.displayBackendChoice.backend.rawValue)",
                "output": "\(encoder.outputWidth)x\(encoder.outputHeight)", "fps": "\(options.video.fps)",
            ])
        } catch {
            lifecycle.cancel()
            lifecycle.awaitExit()
            throw error
        }
        wakeup = QueueWakeup(queue: encodeQueue) { [self] in drain() }
    }

    /// Starts grabbing on the frame grid that begins at `t0` (monotonic ns).
    func start(at t0: Int64) {
        startTime.store(t0, ordering: .releasing)
        lifecycle.go()
    }

    /// Asks the capture thread to stop after its current frame.
    func requestStop() { stopRequested.store(true, ordering: .releasing) }

    /// Ends the channel at `end` on the session timeline: the frame slots before it are
    /// captured, none after.
    func requestStop(at end: MediaTime) { stopAt.store(end.nanoseconds, ordering: .releasing) }

    /// Waits until the last chunk has been handed to the spool. (The capture
    /// thread exits only after the encoder finished, so its exit is the signal.)
    /// A channel prepared but never started is cancelled.
    func waitUntilFinished() {
        lifecycle.cancel()
        lifecycle.awaitExit()
        wakeup?.cancel()
    }

    // MARK: Capture thread

    private func captureThreadMain() {
        defer { lifecycle.exited() }
        let source: any ScreenSource
        do throws(CaptureError) {
            source = try makeSource()
            for warning in source.warnings { logger.warning("\(warning)", metadata: ["channel": "\(id)"]) }
            lifecycle.reportSetup(.success(Self.slots(of: source)))
        } catch {
            lifecycle.reportSetup(.failure(error))
            return
        }
        if lifecycle.awaitGo() && !stopRequested.load(ordering: .acquiring) {
            var display = DisplayState(tracked: monitor)
            captureLoop(source, &display)
        }
        // The end marker tells the encoder to flush; then wait for it so the
        // source (whose memory the encoder reads) outlives every read.
        if wakeup != nil {
            _ = encoderFreed.wait { filled.push(FrameItem(kind: .end, slot: -1, pts: .zero, dirty: DirtyRegion())) }
            wakeup?.wake()
            lifecycle.awaitEncoderDone()
        }
        withExtendedLifetime(source) {}
    }

    /// The backend the session's display target chose (on this thread: its objects live here).
    private func makeSource() throws(CaptureError) -> any ScreenSource {
        switch options.displayBackendChoice.backend {
        case .x11:
            return try X11ScreenSource(displayName: options.displayName, monitor: monitor, poolSize: options.framePoolSize,
                                       drawCursor: options.drawCursor)
        case .wayland:
            return try WaylandScreenSource(channel: id, monitor: monitor, options: options, logger: logger, stats: stats,
                                           cancellation: cancellation, onConsent: onConsent)
        }
    }

    /// The first frame slot (of `fps` a second) that starts at or after `end`: the number of
    /// slots a session that ends at `end` has.
    static func firstSlot(atOrAfter end: MediaTime, fps: Int64) -> Int64 {
        // frameSlot(k) = floor(k * 1e9 / fps) >= end  <=>  k >= end * fps / 1e9 (end is whole ns).
        guard end.nanoseconds < (Int64.max - 999_999_999) / fps else { return .max }
        return (max(0, end.nanoseconds) * fps + 999_999_999) / 1_000_000_000
    }

    static func slots(of source: any ScreenSource) -> FrameSlots {
        FrameSlots((0..<source.poolSize).map { source.pixels(slot: $0) })
    }

    private func captureLoop(_ source: any ScreenSource, _ display: inout DisplayState) {
        // Two clocks meet here: CLOCK_MONOTONIC (`t0`, deadlines, `now`: raw ns) and the session
        // timeline the frame slots lie on (`MediaTime`); `t0 + slotStart.nanoseconds` crosses over.
        let t0 = startTime.load(ordering: .acquiring)
        let fps = Int64(options.video.fps)
        let periodNs = 1_000_000_000 / fps
        let chunk = options.chunkDuration
        @inline(__always) func nominal(_ n: Int64) -> MediaTime { .frameSlot(n, fps: fps) }
        var n: Int64 = 0
        var unchangedRun = 0
        var queued = false
        var showingBlank = false

        let maxDuration = options.maxDuration ?? .max
        // A slot is grabbed this long after its time (0 on X11; see ScreenSource.frameDelayNs).
        let delay = source.frameDelayNs
        @inline(__always) func limit() -> MediaTime {
            min(maxDuration, MediaTime(nanoseconds: stopAt.load(ordering: .relaxed)))
        }
        while !stopRequested.load(ordering: .relaxed) && nominal(n) < limit() {
            let deadline = t0 + nominal(n).nanoseconds + delay
            MonotonicClock.sleep(until: deadline)
            let now = MonotonicClock.now()
            if nominal(n) >= limit() { break }   // the session ended while we slept
            if now - deadline >= periodNs {
                // Stalled (machine busy, X server slow): skip the missed slots
                // instead of bursting to catch up; stay on the grid. Only the slots
                // before the session's end are dropped ones: a stall that ran past
                // the end (on a starved machine, 65 "dropped" of a 3 s recording's
                // 90 slots were 5 too many) would count slots the session never had.
                let missed = (now - deadline) / periodNs
                let end = Self.firstSlot(atOrAfter: limit(), fps: fps)
                stats.dropped.add(Int(max(0, min(n + missed, end) - n)), ordering: .relaxed)
                n += missed
                if nominal(n) >= limit() { break }
            }
            let slotStart = nominal(n)
            let firstOfChunk = n == 0 || slotStart / chunk != nominal(n - 1) / chunk
            let lastOfChunk = nominal(n + 1) / chunk != slotStart / chunk
            do throws(CaptureError) {
                var changed = try source.pollChanges(slotTimeNs: t0 + slotStart.nanoseconds)
                if source.layoutMayHaveChanged() || slotStart >= display.lookAgainAt {
                    if try followLayout(source, &display, at: slotStart) { changed = true }
                }
                if display.offline { stats.offlineFrames.add(1, ordering: .relaxed) }
                if display.offline || pauseGate.isPaused(atNs: slotStart.nanoseconds) {
                    // Paused, or the monitor is off: one black frame, then it is a still screen.
                    changed = false
                    if !showingBlank {
                        if filled.push(FrameItem(kind: .blank, slot: -1, pts: slotStart, dirty: DirtyRegion())) {
                            showingBlank = true
                            queued = true
                            unchangedRun = 0
                            stats.repeated.add(1, ordering: .relaxed)
                            wakeup?.wake()
                            queued = false
                            n += 1
                            continue
                        }
                    }
                } else if showingBlank {
                    // Resumed (or the monitor is back): the encoder's picture is black; send the whole screen.
                    source.invalidate()
                    showingBlank = false
                    changed = true
                }
                if changed || n == 0 {
                    if filled.freeSpace > 0, let slot = display.spareSlot ?? free.pop() {
                        display.spareSlot = nil
                        let dirty: DirtyRegion
                        do {
                            dirty = try source.grab(into: slot, slotTimeNs: t0 + slotStart.nanoseconds)
                        } catch where source.isAlive {
                            // The screen changed under the grab (BadMatch: the monitor no longer
                            // fits where it was). Not the end: look at the layout at once.
                            display.spareSlot = slot
                            display.lookAgainAt = .zero
                            stats.dropped.add(1, ordering: .relaxed)
                            logger.debug("grab failed; the screen layout changed", metadata: ["channel": "\(id)", "error": "\(error)"])
                            n += 1
                            continue
                        }
                        // The frame's timestamp is its slot on the grid. The
                        // grab happens inside that slot (a later one was
                        // skipped above), so the error is the grab latency,
                        // under one frame, usually well under 1 ms; and frames
                        // are never closer than one period, which strict
                        // players and muxers require.
                        _ = filled.push(FrameItem(kind: .grabbed, slot: Int32(slot), pts: slotStart, dirty: dirty))
                        queued = true
                        stats.captured.add(1, ordering: .relaxed)
                        unchangedRun = 0
                    } else {
                        // The encoder is behind: lower the frame rate here, at
                        // the edge. The damage stays pending for the next grab.
                        stats.dropped.add(1, ordering: .relaxed)
                    }
                } else {
                    unchangedRun += 1
                    if unchangedRun <= options.stillRepeatLimit || firstOfChunk || lastOfChunk {
                        // Queue a repeat only while the encoder keeps up, so
                        // latency stays bounded to a couple of frames.
                        if filled.capacity - filled.freeSpace < 2,
                           filled.push(FrameItem(kind: .repeated, slot: -1, pts: slotStart, dirty: DirtyRegion())) {
                            queued = true
                            stats.repeated.add(1, ordering: .relaxed)
                        } else {
                            stats.dropped.add(1, ordering: .relaxed)
                        }
                    } else {
                        stats.leftOut.add(1, ordering: .relaxed)
                    }
                }
            } catch {
                logger.error("display capture failed", metadata: ["channel": "\(id)", "error": "\(error)"])
                onFailure(error)
                return
            }
            // Wake the encoder only when there is work: a still screen then
            // costs no thread hand-off at all between chunk boundaries.
            if queued {
                wakeup?.wake()
                queued = false
            }
            n += 1
        }
    }

    // MARK: Encoder queue

    private func drain() {
        // The encoder's state (encoder, chunker, slots, lastPts, failed) is this queue's alone.
        dispatchPrecondition(condition: .onQueue(encodeQueue))
        while let item = filled.pop() {
            encoderFreed.changed()   // a place in `filled`
            switch item.kind {
            case .end:
                finishStream()
                return
            case .grabbed:
                let slot = Int(item.slot)
                if !failed, let encoder, let slots {
                    encoder.updatePicture(from: slots.views[slot], dirty: item.dirty)
                }
                _ = free.push(slot)
                encoderFreed.changed()   // an image back
                encodeFrame(at: item.pts)
            case .repeated:
                encodeFrame(at: item.pts)
            case .blank:
                if !failed { encoder?.fillBlack() }
                encodeFrame(at: item.pts)
            case .reconfigure:
                // Every slot of the old images is back (the capture thread waited for it).
                if let next = nextSlots.withLock({ s -> FrameSlots? in defer { s = nil }; return s }) { slots = next }
                if !failed, let encoder {
                    do throws(CaptureError) {
                        try encoder.changeSource(width: Int(item.width), height: Int(item.height))
                    } catch {
                        fail(error)
                    }
                }
            }
        }
    }

    /// Fault injection for tests: `CAPTURE_AGENT_TEST_ENCODE_DELAY_MS` makes every frame's
    /// encode that much slower, an encoder that cannot keep up on any machine (instead of
    /// relying on a slow preset being slow enough here).
    private static let testEncodeDelayUs: UInt32 = getenv("CAPTURE_AGENT_TEST_ENCODE_DELAY_MS")
        .flatMap { UInt32(String(cString: $0)) }.map { min($0, 10_000) * 1000 } ?? 0

    /// Fault injection for tests: `CAPTURE_AGENT_TEST_ENCODER_FAULT_AT_FRAME=N` makes the Nth
    /// frame's encode fail with ENCODER_ERROR, as a failing x264 or FFmpeg call would (none of
    /// the settings a client can give makes them fail: they are all validated first).
    private static let testEncoderFaultAtFrame: Int = getenv("CAPTURE_AGENT_TEST_ENCODER_FAULT_AT_FRAME")
        .flatMap { Int(String(cString: $0)) } ?? 0
    private var framesEncoded = 0

    private func encodeFrame(at slot: MediaTime) {
        guard !failed, let encoder, let chunker else { return }
        if Self.testEncodeDelayUs > 0 { usleep(Self.testEncodeDelayUs) }
        framesEncoded += 1
        if framesEncoded == Self.testEncoderFaultAtFrame {
            fail(CaptureError(.encoderError, "frame \(framesEncoded) could not be encoded "
                + "(fault injected by CAPTURE_AGENT_TEST_ENCODER_FAULT_AT_FRAME)"))
            return
        }
        // The slot's time to the nearest tick. Slots are at least 1500 ticks apart (60 fps), so
        // the nudge never fires in practice; it keeps pts increasing, which the muxer requires.
        var pts = Ticks90k(rounding: slot)
        if pts <= lastPts { pts = lastPts + Ticks90k(ticks: 1) }
        lastPts = pts
        let chunk = chunker.chunkIndex(of: pts)
        let keyframe = chunk != lastChunk
        lastChunk = chunk
        do throws(CaptureError) {
            try encoder.encode(pts: pts, keyframe: keyframe) { (packet) throws(CaptureError) in
                try chunker.write(packet)
            }
        } catch {
            fail(error)
        }
    }

    private func finishStream() {
        dispatchPrecondition(condition: .onQueue(encodeQueue))
        defer { lifecycle.encoderFinished() }
        guard !failed, let encoder, let chunker else { return }
        do throws(CaptureError) { try chunker.finish(flushing: encoder) } catch { fail(error) }
    }

    private func fail(_ error: CaptureError) {
        failed = true
        logger.error("video encoding failed", metadata: ["channel": "\(id)", "error": "\(error)"])
        onFailure(error)
    }
}
