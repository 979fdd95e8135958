import CaptureCore
import CaptureConcurrency
import CaptureSpool
import Dispatch
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
import PulseCapture
import Synchronization

/// One block of audio on its way from the capture thread to the encoder.
struct AudioBlockItem: BitwiseCopyable {
    /// Pool slot with `AudioFormat.blockSamples` interleaved floats; -1 marks the end.
    var slot: Int32
    /// Position of the block's first sample frame on the session timeline.
    var pts: SampleFrames
}

/// Preallocated sample blocks shared by an audio channel's capture side and
/// its encoder.
///
/// Why `@unchecked Sendable` is sound: block `i` is written only by the
/// capture side between popping `i` from the `free` ring and pushing it to
/// `filled`, and read only by the encoder between popping it from `filled` and
/// pushing it back to `free`; the rings order those hand-overs.
final class SampleBlocks: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    let count: Int

    init(count: Int) {
        self.count = count
        // Not pre-touched: a block is always written before it is read.
        base = .allocate(capacity: count * AudioFormat.blockSamples)
    }

    deinit { base.deallocate() }

    @inline(__always)
    func block(_ i: Int) -> UnsafeMutablePointer<Float> { base + i * AudioFormat.blockSamples }
}

/// One `mic:*` or `system_audio:*` channel: PulseAudio delivers timestamped
/// fragments on its own thread; the channel places them on the session
/// timeline in whole AAC-sized blocks, filling holes with silence; an encoder
/// queue turns blocks into AAC and chunks.
///
/// Where each block goes on the timeline is `AudioSynchronizer`'s decision; the channel
/// writes what it decides into blocks.
///
/// Why `@unchecked Sendable` is sound: the timeline state (`current*`,
/// `nextPts`, `synchronizer`) is touched only from
/// the recorder's callbacks, which libpulse runs one at a time on its mainloop
/// thread, and from `finishCapture()`, which runs after `recorder.stop()` has
/// returned (no callback runs any more). The encoder state (`encoder`,
/// `chunker`, `expectedPts`, `failed`) is set up in `prepare()` before the
/// wakeup exists and afterwards touched only on the serial `encodeQueue`. The
/// timeline's end (`limit`), its zero (`startTime`) and `running` are atomics
/// written by the session's thread and read by the callbacks.
final class AudioChannel: AudioCaptureSink, AudioSynchronizer.Writer, @unchecked Sendable {
    let id: ChannelID
    let stats: ChannelStats
    /// Pausing the track: digital silence from the pause instant on.
    let pauseGate = PauseGate()
    private let target: AudioCaptureTarget
    private let options: RecordingOptions
    private let logger: Logger
    private let onFailure: @Sendable (CaptureError) -> Void
    private let live = AudioChannel.liveInstances.token()
    static let liveInstances = LiveInstances("AudioChannel")

    /// 256 blocks = 5.5 s: the encoder may fall that far behind before audio
    /// has to be dropped (`lostSamples`; AAC costs ~1% of a core, so only a starved
    /// machine gets there).
    static let poolBlocks = 256
    private let blocks = SampleBlocks(count: AudioChannel.poolBlocks)
    private let filled = SPSCRing<AudioBlockItem>(capacity: AudioChannel.poolBlocks)
    private let free = SPSCRing<Int>(capacity: AudioChannel.poolBlocks)
    /// The encoder popped an item and handed its block back: a capture side waiting for room
    /// (the stop's tail of silence, the end marker) goes on.
    private let encoderFreed = ConditionSignal()
    private let running = Atomic<Bool>(false)
    private let startTime = Atomic<Int64>(0)
    /// The encoder's end (an audio channel has no thread of its own to start or stop).
    private let lifecycle = ChannelLifecycle<Void>()

    private var recorder: AudioRecorder?
    private let encodeQueue: DispatchQueue
    private var wakeup: QueueWakeup?

    // Capture-side timeline state.
    private var currentSlot = -1
    private var currentFrames = 0
    private var currentPts = SampleFrames.zero
    private var nextPts = SampleFrames.zero
    /// Decides where each block goes; keeps the audio from just before the start.
    private var synchronizer = AudioSynchronizer(prerollFrames: AudioFormat.sampleRate / 2)
    private var blocksSinceWake = 0
    static let blocksPerWake = 4
    /// End of the timeline (`SampleFrames`; an atomic holds the raw count):
    /// `RecordingOptions.maxDurationNs`, then the session's end once it stops. Written by
    /// `stopAndWait` before the recorder's last callbacks, read by them.
    private let limit = Atomic<Int64>(.max)
    private var limitFrames: SampleFrames { SampleFrames(frames: limit.load(ordering: .acquiring)) }

    // Encoder-side state.
    private var encoder: AudioEncoder?
    private var chunker: Chunker<SampleFrames>?
    /// Where the next block starts if none was lost (nil before the first).
    private var expectedPts: SampleFrames?
    private var failed = false
    private let silence: UnsafeMutablePointer<Float>


    init(id: ChannelID, target: AudioCaptureTarget, options: RecordingOptions, logger: Logger,
         onFailure: @escaping @Sendable (CaptureError) -> Void) {
        self.id = id
        self.target = target
        self.options = options
        self.logger = logger
        self.onFailure = onFailure
        self.stats = ChannelStats(channel: id)
        self.encodeQueue = DispatchQueue(label: "capture-agent.encode.\(id.directoryName)", qos: .userInteractive)
        if let max = options.maxDuration { limit.store(SampleFrames(rounding: max).frames, ordering: .relaxed) }
        self.silence = .allocate(capacity: AudioFormat.blockSamples)
        silence.initialize(repeating: 0, count: AudioFormat.blockSamples)
        for i in 0..<AudioChannel.poolBlocks { _ = free.push(i) }
    }

    deinit { silence.deallocate() }

    func prepare(spool: SpoolWriter) throws(CaptureError) {
        let encoder = try AudioEncoder(bitrate: options.audioBitrate)
        let muxer = try TSChunkMuxer(stream: encoder.stream)
        let outlet = try spool.addChannel(id, codec: "aac")
        self.encoder = encoder
        self.chunker = Chunker(muxer: muxer, outlet: outlet, chunkDuration: options.chunkDuration,
                               nominalPacketDuration: SampleFrames.block, stats: stats, closesAtGridEnd: true)
        wakeup = QueueWakeup(queue: encodeQueue) { [self] in drain() }
        let recorder = AudioRecorder(target: target, streamName: "capture-agent \(id)", sink: self,
                                     reconnectTimeout: options.audioReconnectTimeout)
        try recorder.start()
        self.recorder = recorder
        logger.info("audio channel ready", metadata: ["channel": "\(id)", "device": "\(recorder.deviceName ?? "?")"])
    }

    /// Waits until the server delivers this channel's audio, at most until `deadline` (monotonic
    /// ns). A session starts only then: a source whose server takes a moment to deliver (an idle
    /// null sink's monitor runs 2 s blocks until it has switched to the latency we asked for:
    /// measured ~1 s before the first byte) would otherwise begin every recording with that much
    /// silence, though it carried sound all along. (Audio the recorder still holds while its
    /// timing settles comes later, with the right times.) False when it timed out (the channel
    /// then starts with silence, counted).
    func waitUntilFlowing(deadline: Int64) -> Bool {
        recorder?.waitUntilStreaming(deadline: deadline) ?? true
    }

    /// Places audio on the timeline that starts at `t0` (monotonic ns). Audio
    /// captured before `t0` is discarded; the span from `t0` to the first
    /// captured sample is silence.
    func start(at t0: Int64) {
        startTime.store(t0, ordering: .releasing)
        running.store(true, ordering: .releasing)
    }

    /// Sets the end of the channel's timeline: audio from `end` on is left out from now on.
    /// A session calls it on every channel before it waits for any (`stopAndWait`): while one
    /// channel waits for its source's last moments (a bursty source: up to 2 s), the others
    /// would otherwise go on appending audio past the end (measured: a mic 33 ms longer than
    /// the session it belonged to).
    func endTimeline(at end: MediaTime) {
        let endFrames = SampleFrames(rounding: end)
        if endFrames < limitFrames { limit.store(endFrames.frames, ordering: .releasing) }
    }

    /// Ends the channel at `end` on the session timeline: waits for the audio captured up to then
    /// (the recorder knows how late its source delivers), fills with silence only what never
    /// came (counted), closes the last block and waits until the last chunk is in the spool.
    /// nil: stop now without waiting (the session never started).
    func stopAndWait(at end: MediaTime?) {
        if let end {
            endTimeline(at: end)
            let t0 = startTime.load(ordering: .acquiring)
            let waited = recorder?.finish(capturedUntil: t0 + end.nanoseconds) ?? .zero
            if waited > .milliseconds(300) {
                logger.debug("waited for the end of the audio", metadata: [
                    "channel": "\(id)", "ms": "\(waited.nanoseconds / 1_000_000)"])
            }
        }
        running.store(false, ordering: .releasing)
        recorder?.stop()
        finishCapture(fillToLimit: end != nil)
        lifecycle.awaitEncoderDone()
        wakeup?.cancel()
    }

    // MARK: AudioCaptureSink (PulseAudio mainloop thread)

    func audioCapture(didCapture samples: UnsafeBufferPointer<Float>, frameCount: Int, captureTime: Int64) {
        guard frameCount > 0, let base = samples.baseAddress else { return }
        synchronizer.admit(base, frames: frameCount, captureTime: captureTime, running: running.load(ordering: .acquiring),
                           sessionZero: startTime.load(ordering: .relaxed), into: self)
    }

    func audioCaptureDidDiscontinue(reason: String) {
        stats.discontinuities.add(1, ordering: .relaxed)
        synchronizer.discontinued()
        logger.notice("audio interrupted; the gap will be filled with silence",
                      metadata: ["channel": "\(id)", "reason": "\(reason)"])
    }

    // MARK: AudioSynchronizer.Writer (PulseAudio mainloop thread)

    var streamEnd: SampleFrames { nextPts }
    var timelineEnd: SampleFrames { limitFrames }

    /// Writes a block as the synchronizer placed it, counting what it added and left out.
    func write(_ samples: UnsafePointer<Float>, frames frameCount: Int, _ placement: AudioSynchronizer.Placement) {
        if placement.first, placement.silence > SampleFrames(frames: SampleFrames.rate / 50) {
            // Once per session, off the per-block path. A lead within one 20 ms quantum is the
            // first stamp's precision (it comes from the server's latency report: 1-6 samples on
            // a warm rig, 235 once on a fresh one); more means the start did not wait for its
            // source (that regression filled 340-930 ms).
            logger.notice("audio starts after the session's zero; the lead is filled with silence",
                          metadata: ["channel": "\(id)", "samples": "\(placement.silence.frames)"])
        }
        if placement.silence > .zero { appendSilence(placement.silence) }
        for _ in 0..<placement.repeats {
            stats.repeatedSamples.add(append(samples, frames: 1), ordering: .relaxed)
        }
        let skip = placement.skip
        // At the start, what is left out predates the session; later it is an overlap.
        if skip > 0, !placement.first { stats.overlapDroppedSamples.add(skip, ordering: .relaxed) }
        if skip < frameCount {
            let placed = append(samples + skip * AudioFormat.channels, frames: frameCount - skip)
            stats.capturedSamples.add(placed, ordering: .relaxed)
        }
    }

    func audioCapture(didFail error: CaptureError) {
        logger.error("audio capture failed", metadata: ["channel": "\(id)", "error": "\(error)"])
        onFailure(error)
    }

    // MARK: Timeline (capture side)

    private func appendSilence(_ frames: SampleFrames) {
        var remaining = Int(min(frames, max(.zero, limitFrames - nextPts)).frames)
        while remaining > 0 {
            let n = min(remaining, AudioFormat.blockFrames)
            stats.silenceFilledSamples.add(append(silence, frames: n), ordering: .relaxed)
            remaining -= n
        }
    }

    /// Copies interleaved frames into the current block, queueing every full one. Returns how
    /// many frames went onto the timeline (the rest lay past its end).
    @discardableResult
    private func append(_ source: UnsafePointer<Float>, frames requested: Int) -> Int {
        let frames = Int(min(SampleFrames(frames: Int64(requested)), max(.zero, limitFrames - nextPts)).frames)
        var offset = 0
        while offset < frames {
            if currentSlot < 0 {
                guard let slot = free.pop() else {
                    // The encoder is more than 5 s behind (the machine is starved:
                    // measured with a test suite and a soak sharing 2 cores): keep the
                    // timeline right (the encoder fills the hole with silence) but this
                    // audio is lost, and counted as such.
                    stats.lostSamples.add(frames - offset, ordering: .relaxed)
                    nextPts += SampleFrames(frames: Int64(frames - offset))
                    return offset
                }
                currentSlot = slot
                currentFrames = 0
                currentPts = nextPts
            }
            let n = min(frames - offset, AudioFormat.blockFrames - currentFrames)
            let destination = blocks.block(currentSlot) + currentFrames * AudioFormat.channels
            destination.update(from: source + offset * AudioFormat.channels, count: n * AudioFormat.channels)
            if let window = pauseGate.window() {
                silencePaused(destination, frames: n, at: nextPts, window: window)
            }
            currentFrames += n
            offset += n
            nextPts += SampleFrames(frames: Int64(n))
            if currentFrames == AudioFormat.blockFrames {
                _ = filled.push(AudioBlockItem(slot: Int32(currentSlot), pts: currentPts))
                stats.captured.add(1, ordering: .relaxed)
                currentSlot = -1
                // Hand blocks over in fours (85 ms): a quarter of the thread
                // wake-ups, and nothing next to one-second chunks.
                blocksSinceWake += 1
                if blocksSinceWake >= Self.blocksPerWake {
                    blocksSinceWake = 0
                    wakeup?.wake()
                }
            }
        }
        return frames
    }

    /// Zeroes the frames of `destination` (starting at timeline frame `pts`)
    /// that fall inside the pause window (timeline ns, to the nearest sample).
    @inline(__always)
    private func silencePaused(_ destination: UnsafeMutablePointer<Float>, frames: Int, at pts: SampleFrames,
                               window: (from: Int64, until: Int64)) {
        let from = SampleFrames(rounding: MediaTime(nanoseconds: window.from))
        let until = window.until == .max ? SampleFrames(frames: .max) : SampleFrames(rounding: MediaTime(nanoseconds: window.until))
        let lo = max(pts, from), hi = min(pts + SampleFrames(frames: Int64(frames)), until)
        guard lo < hi else { return }
        (destination + Int((lo - pts).frames) * AudioFormat.channels)
            .update(repeating: 0, count: Int((hi - lo).frames) * AudioFormat.channels)
    }

    /// With `fillToLimit`, fills the rest of the timeline up to its end with silence (the audio that
    /// never arrived, counted); pads the open block with silence (AAC framing, past the end),
    /// queues it and the end marker. Runs after the recorder stopped: no callback runs any more.
    private func finishCapture(fillToLimit: Bool) {
        if fillToLimit && limitFrames.frames != .max {
            // (A stream with no audio at all starts at zero: nothing was written.)
            if nextPts < limitFrames {
                logger.notice("audio up to the stop did not arrive in time; the rest is filled with silence",
                              metadata: ["channel": "\(id)", "samples": "\((limitFrames - nextPts).frames)"])
            }
            // Block by block, waiting for the encoder when the pool runs dry: a long tail (a
            // source that never delivered) is more than the pool holds. Off the hot path.
            while nextPts < limitFrames {
                if currentSlot < 0 && free.isEmpty {
                    wakeup?.wake()
                    _ = encoderFreed.wait { !free.isEmpty }
                    continue
                }
                let room = currentSlot < 0 ? AudioFormat.blockFrames : AudioFormat.blockFrames - currentFrames
                appendSilence(min(limitFrames - nextPts, SampleFrames(frames: Int64(room))))
            }
            // A monitor's audio is stamped with when it will be heard, so it arrives before
            // that by the sink's latency: at the stop the stream may already hold audio from
            // after the end. When all of it is still in the open block it goes (it belongs to
            // no session, like audio captured after a stop); when part of it was already handed
            // to the encoder (the open block holds less than the excess: the block boundary
            // falls inside the sink's latency) it all stays, and the stream is longer by up to
            // the sink's latency.
            let excess = nextPts - limitFrames
            if excess > .zero && currentSlot >= 0 && excess.frames <= Int64(currentFrames) {
                currentFrames -= Int(excess.frames)
                nextPts -= excess
                stats.capturedSamples.subtract(Int(excess.frames), ordering: .relaxed)
            }
        }
        if currentSlot >= 0 {
            let block = blocks.block(currentSlot) + currentFrames * AudioFormat.channels
            block.update(repeating: 0, count: (AudioFormat.blockFrames - currentFrames) * AudioFormat.channels)
            _ = filled.push(AudioBlockItem(slot: Int32(currentSlot), pts: currentPts))
            stats.captured.add(1, ordering: .relaxed)
            currentSlot = -1
        }
        _ = encoderFreed.wait { filled.push(AudioBlockItem(slot: -1, pts: .zero)) }
        wakeup?.wake()
    }

    // MARK: Encoder queue

    private func drain() {
        // The encoder's state (encoder, chunker, expectedPts) is this queue's alone.
        dispatchPrecondition(condition: .onQueue(encodeQueue))
        while let item = filled.pop() {
            if item.slot < 0 {
                finishStream()
                return
            }
            let slot = Int(item.slot)
            if !failed {
                // Keep the AAC stream contiguous: a lost block becomes silence.
                while let expected = expectedPts, expected + .block <= item.pts && !failed {
                    encodeBlock(silence, pts: expected)
                }
                encodeBlock(blocks.block(slot), pts: item.pts)
            }
            _ = free.push(slot)
            encoderFreed.changed()
        }
    }

    private func encodeBlock(_ samples: UnsafeMutablePointer<Float>, pts: SampleFrames) {
        guard let encoder, let chunker else { return }
        expectedPts = pts + .block
        do throws(CaptureError) {
            try encoder.encode(interleaved: UnsafeBufferPointer(start: samples, count: AudioFormat.blockSamples),
                               pts: pts) { (packet) throws(CaptureError) in try chunker.write(packet) }
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
        logger.error("audio encoding failed", metadata: ["channel": "\(id)", "error": "\(error)"])
        onFailure(error)
    }
}
