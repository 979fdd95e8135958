import CaptureCore
#if canImport(Glibc)
import Glibc
#endif
import PulseCapture

/// The one place an audio channel's timing is decided, as SimpleScreenRecorder's Synchronizer
/// is for its inputs: the channel hands every block its recorder delivers to `admit`, and
/// writes what it is told.
///
/// What comes in: blocks of interleaved frames with the CLOCK_MONOTONIC capture time of their
/// first frame. Making that time is the source's job (PulseCapture's `StreamTimeline` and
/// `CaptureClock` turn the server's timing reports into it, as SSR's inputs stamp their own
/// samples); from here on only the session's timeline counts. What goes out, per block, a
/// `Placement` for the channel's block writer: silence before the block, its first frame
/// repeated, frames left out of its start. Decided here:
/// - **Before the start.** Blocks that arrive before the session runs are kept (`AudioPreroll`,
///   the newest half second): the block that straddles the session's zero may arrive before
///   the zero is set (from a monitor, before it is heard). When the session runs, the kept
///   audio is admitted first.
/// - **The start.** The first audio goes where its capture time says: what lies before the
///   zero is left out, a lead after it is silence.
/// - **After.** Each block is kept in step with the timeline (`AudioPlacement`: holes filled,
///   overlaps left out, drift nudged a frame at a time), with tighter thresholds right after
///   the source reported a break (`discontinued`).
/// - **The end.** Nothing is placed once the stream has reached the timeline's end.
///
/// Not thread-safe: the recorder's thread owns it (AudioChannel's capture side). Never
/// allocates after `init`. Not copyable: a copy would share the kept audio but not the state.
struct AudioSynchronizer: ~Copyable {
    /// What the writer does with one block, in this order: `silence` frames of silence, the
    /// block's first frame `repeats` times, then the block from frame `skip` on.
    struct Placement: Equatable {
        var silence = SampleFrames.zero
        var repeats = 0
        var skip = 0
        /// The session's first audio: `silence` is the lead before it, `skip` the part of the
        /// block from before the session's zero (not an overlap).
        var first = false
    }

    /// Where a channel's blocks go: its stream so far and its end.
    protocol Writer: AnyObject {
        /// Where the next frame written goes on the timeline.
        var streamEnd: SampleFrames { get }
        /// The timeline's end: `RecordingOptions.maxDuration`, then the session's end.
        var timelineEnd: SampleFrames { get }
        /// Writes a block as placed; moves `streamEnd` on by what it wrote.
        func write(_ samples: UnsafePointer<Float>, frames: Int, _ placement: Placement)
    }

    private let preroll: AudioPreroll
    private var placement = AudioPlacement()
    private(set) var started = false
    private var afterDiscontinuity = false

    /// - Parameter prerollFrames: how much audio from before the start is kept (frames).
    init(prerollFrames: Int) {
        preroll = AudioPreroll(capacityFrames: prerollFrames)
    }

    /// A block from the recorder. `running`: the session has started, at `sessionZero`
    /// (CLOCK_MONOTONIC ns); until then the block is kept.
    mutating func admit(_ samples: UnsafePointer<Float>, frames: Int, captureTime: Int64,
                        running: Bool, sessionZero: Int64, into writer: some Writer) {
        guard frames > 0 else { return }
        guard running else {
            preroll.keep(samples, frames: frames, captureTime: captureTime)
            return
        }
        if !preroll.isEmpty {
            // The audio from just before the start: the part from the session's zero on belongs
            // to the session (a monitor's audio arrives before it is heard, by the sink's latency).
            place(preroll.samples, frames: preroll.frames, captureTime: preroll.captureTime,
                  sessionZero: sessionZero, into: writer)
            preroll.clear()
        }
        place(samples, frames: frames, captureTime: captureTime, sessionZero: sessionZero, into: writer)
    }

    /// The source reported a break (its server restarted, it was moved): the next block is
    /// placed with the tight thresholds, so the hole is filled where it is.
    mutating func discontinued() {
        afterDiscontinuity = true
    }

    private mutating func place(_ samples: UnsafePointer<Float>, frames: Int, captureTime: Int64,
                                sessionZero: Int64, into writer: some Writer) {
        let streamEnd = writer.streamEnd
        guard streamEnd < writer.timelineEnd else { return }
        // Where the first frame belongs on the timeline (to the nearest sample).
        let position = SampleFrames(rounding: MediaTime(nanoseconds: captureTime - sessionZero))
        var decided = Placement()
        if !started {
            if position + SampleFrames(frames: Int64(frames)) <= .zero { return }     // all of it predates the session
            started = true
            decided.first = true
            if position < .zero { decided.skip = Int(-position.frames) }
            decided.silence = max(position, .zero)   // nothing is written before the first audio
        } else {
            let d = placement.decide(drift: position - streamEnd, frames: frames, afterDiscontinuity: afterDiscontinuity)
            decided.silence = d.silence
            decided.repeats = d.repeats
            decided.skip = d.skip
        }
        afterDiscontinuity = false
        writer.write(samples, frames: frames, decided)
    }
}

/// The newest half second of audio that arrived before a session started, with the capture time
/// of its first frame (`AudioSynchronizer`'s keeping before the start). Allocated once; `keep`
/// copies, which only happens before the session starts.
final class AudioPreroll {
    let capacity: Int
    private let buffer: UnsafeMutablePointer<Float>
    private(set) var frames = 0
    private(set) var captureTime: Int64 = 0

    init(capacityFrames: Int) {
        capacity = capacityFrames
        buffer = .allocate(capacity: capacityFrames * AudioFormat.channels)
    }

    deinit { buffer.deallocate() }

    var isEmpty: Bool { frames == 0 }
    var samples: UnsafePointer<Float> { UnsafePointer(buffer) }

    func clear() { frames = 0 }

    /// Appends a block, keeping only the newest `capacity` frames; a block that does not follow
    /// the kept audio (a gap of more than 2 ms) replaces it.
    func keep(_ source: UnsafePointer<Float>, frames n: Int, captureTime time: Int64) {
        let period = CaptureClock.nominalNanosecondsPerFrame
        let end = captureTime + Int64(Double(frames) * period)
        if frames > 0 && abs(time - end) > 2_000_000 { frames = 0 }
        if frames == 0 { captureTime = time }
        let c = AudioFormat.channels
        let incoming = min(n, capacity)
        let skipped = n - incoming
        let overflow = frames + incoming - capacity
        if overflow > 0 {
            memmove(buffer, buffer + overflow * c, (frames - overflow) * c * MemoryLayout<Float>.size)
            frames -= overflow
            captureTime += Int64(Double(overflow) * period)
        }
        if frames == 0 { captureTime = time + Int64(Double(skipped) * period) }
        (buffer + frames * c).update(from: source + skipped * c, count: incoming * c)
        frames += incoming
    }
}
