import CaptureCore

/// How a block of audio goes onto the session timeline, given how far the place it belongs
/// (from its capture time) is from where the channel's stream has got to: the synchronizer's
/// decision, a value the unit tests drive with drifting, jittery and broken sources.
///
/// A source's sample clock and CLOCK_MONOTONIC (the session's clock, the video's frame grid)
/// never run at quite the same rate: measured on the test rig, the audio of an hour-long
/// recording got 132 ms ahead of its timeline (37 ppm), and real sound cards differ by up to a
/// few hundred ppm. Appending blocks one after another lets that add up until a threshold
/// drops 100 ms or fills 40 ms at once (a glitch, and A/V apart by that much meanwhile). So a
/// stream more than half a millisecond off is nudged back a frame at a time: a frame repeated
/// when the source is slow, one left out when it is fast, at most one in 256 (0.4 %, far more
/// than any real clock needs, and inaudible; a resampler would be smoother but costs a filter
/// per sample). Holes and overlaps beyond the thresholds are still filled or dropped at once,
/// and right after a reported break (`afterDiscontinuity`) from 2 ms on.
struct AudioPlacement {
    /// What to do with one block.
    struct Decision: Equatable {
        /// Silence before the block (a hole).
        var silence = SampleFrames.zero
        /// Times the block's first frame is repeated before it (a slow source kept in step).
        var repeats: Int = 0
        /// Frames left out at the block's start (an overlap, or a fast source kept in step).
        var skip: Int = 0
    }

    /// Gaps up to this are timestamp jitter or drift, not holes (40 ms).
    static let holeThreshold = SampleFrames(frames: 1_920)
    /// Audio that arrives earlier than the timeline by more than this is an overlap (100 ms).
    static let overlapThreshold = SampleFrames(frames: 4_800)
    /// Both thresholds right after the source reported a break (2 ms).
    static let afterBreakThreshold = SampleFrames(frames: 96)
    /// How far the stream may be off before it is nudged (0.5 ms).
    static let driftTolerance = SampleFrames(frames: 24)
    /// At most one frame in this many is repeated or left out.
    static let nudgeDivisor = 256

    /// An overlap is being left out, block after block, until the stream is back in step (not
    /// just back under the threshold, which would leave it up to 100 ms off for the nudges).
    private(set) var overlapping = false

    /// - Parameters:
    ///   - drift: where the block belongs minus where the stream has got to (> 0: the stream is
    ///     behind the clock).
    ///   - frames: the block's length.
    mutating func decide(drift: SampleFrames, frames: Int, afterDiscontinuity: Bool) -> Decision {
        let hole = afterDiscontinuity ? Self.afterBreakThreshold : Self.holeThreshold
        let overlap = afterDiscontinuity ? Self.afterBreakThreshold : Self.overlapThreshold
        if drift > hole {
            overlapping = false
            return Decision(silence: drift)
        }
        if drift < -overlap { overlapping = true }
        // Repeats and skips count frames of this block (buffer offsets): plain integers from here.
        let d = drift.frames, tolerance = Self.driftTolerance.frames
        if overlapping {
            if d < -tolerance { return Decision(skip: Int(min(-d, Int64(frames)))) }
            overlapping = false
        }
        let nudge = Int64(max(1, frames / Self.nudgeDivisor))
        if d > tolerance { return Decision(repeats: Int(min(d - tolerance, nudge))) }
        if d < -tolerance {
            return Decision(skip: Int(min(-d - tolerance, nudge, Int64(frames))))
        }
        return Decision()
    }
}
