import CaptureCore
import CaptureTestSupport
@testable import CapturePipeline
import XCTest

/// The synchronizer's decisions, driven by sources whose clocks drift against the session's, that
/// jitter, and that break.
final class AudioPlacementTests: XCTestCase {
    /// A model of an audio channel's stream: blocks arrive with the place they belong (from
    /// their capture time); each decision is carried out the way AudioChannel does.
    struct Stream {
        var nextPts: Int64 = 0
        var silence: Int64 = 0, repeats = 0, skipped = 0, placed = 0
        var worstResidual: Int64 = 0
        var afterDiscontinuity = false
        var synchronizer = AudioPlacement()

        /// `position`: where the block's first frame belongs. Returns where it went minus that.
        @discardableResult
        mutating func place(position: Int64, frames: Int, measure: Bool = true) -> Int64 {
            let d = synchronizer.decide(drift: SampleFrames(frames: position - nextPts), frames: frames,
                                        afterDiscontinuity: afterDiscontinuity)
            afterDiscontinuity = false
            nextPts += d.silence.frames + Int64(d.repeats)
            silence += d.silence.frames
            repeats += d.repeats
            skipped += d.skip
            // The first frame placed is frame `skip` of the block, which belongs at position + skip.
            let residual = nextPts - (position + Int64(d.skip))
            if measure { worstResidual = max(worstResidual, abs(residual)) }
            nextPts += Int64(frames - d.skip)
            placed += frames - d.skip
            return residual
        }
    }

    /// An hour of 10 ms blocks from a source `ppm` fast (positive) or slow, with `jitter` frames
    /// of noise in its capture times.
    private func hour(ppm: Double, jitter: Int64, seed: UInt64 = 1) -> Stream {
        var s = Stream()
        var rng = SeededRNG(seed: seed)
        let rate = 1.0 / (1.0 + ppm * 1e-6)      // timeline frames per source frame
        var source: Int64 = 0
        for block in 0..<360_000 {
            let position = Int64((Double(source) * rate).rounded()) + Int64.random(in: -jitter...jitter, using: &rng)
            s.place(position: position, frames: 480, measure: block > 6_000)
            source += 480
        }
        return s
    }

    func testAFastSourceIsKeptOnTheClockAFrameAtATime() {
        let s = hour(ppm: 100, jitter: 0)
        // 100 ppm of an hour at 48 kHz: 17 280 frames too many, left out one by one.
        XCTAssertEqual(Double(s.skipped), 17_280, accuracy: 30)
        XCTAssertEqual(s.repeats, 0)
        XCTAssertEqual(s.silence, 0, "no hole was made up")
        XCTAssertLessThanOrEqual(s.worstResidual, AudioPlacement.driftTolerance.frames + 1, "A/V apart by \(s.worstResidual) frames")
    }

    func testASlowSourceIsKeptOnTheClockAFrameAtATime() {
        let s = hour(ppm: -100, jitter: 0)
        XCTAssertEqual(Double(s.repeats), 17_280, accuracy: 30)
        XCTAssertEqual(s.skipped, 0)
        XCTAssertEqual(s.silence, 0)
        XCTAssertLessThanOrEqual(s.worstResidual, AudioPlacement.driftTolerance.frames + 1)
    }

    /// The rig's measured drift (37 ppm) with +-5 frames of jitter: within a millisecond all hour,
    /// nothing dropped or filled in lumps, and the nudges no more than the drift needs.
    func testTheMeasuredDriftWithJitterStaysWithinAMillisecond() {
        let s = hour(ppm: 37, jitter: 5, seed: 7)
        XCTAssertLessThanOrEqual(s.worstResidual, 48, "A/V apart by \(s.worstResidual) frames")
        XCTAssertEqual(s.silence, 0)
        XCTAssertEqual(Double(s.skipped - s.repeats), 37e-6 * 3600 * 48_000, accuracy: 40)
        XCTAssertLessThan(s.skipped + s.repeats, 8_000, "jitter alone caused nudges: \(s.skipped) + \(s.repeats)")
        // Without nudges (the old synchronizer) the same hour ended 100 ms off, then dropped 100 ms at once.
    }

    func testHolesAndOverlapsAreStillMadeUpAtOnce() {
        var s = Stream()
        s.place(position: 0, frames: 480)
        s.place(position: 480, frames: 480)
        // 50 ms lost upstream, unreported: beyond the 40 ms hole threshold, filled at once.
        XCTAssertEqual(s.place(position: 960 + 2_400, frames: 480), 0)
        XCTAssertEqual(s.silence, 2_400)
        // 300 ms lost with the break reported: filled at once.
        s.afterDiscontinuity = true
        XCTAssertEqual(s.place(position: s.nextPts + 14_400, frames: 480), 0)
        XCTAssertEqual(s.silence, 2_400 + 14_400)
        // After a reported break, even 3 ms is a hole, not drift.
        s.afterDiscontinuity = true
        XCTAssertEqual(s.place(position: s.nextPts + 144, frames: 480), 0)
        // Audio from 200 ms ago (an overlap): left out, a block at a time, until back in step
        // (not just back under the 100 ms threshold).
        let before = s.skipped
        var p = s.nextPts - 9_600
        for _ in 0..<30 {
            s.place(position: p, frames: 480)
            p += 480
        }
        XCTAssertEqual(s.skipped - before, 9_600, accuracy: 24, "\(s.skipped - before)")
        XCTAssertLessThanOrEqual(abs(s.place(position: p, frames: 480)), AudioPlacement.driftTolerance.frames)
        XCTAssertFalse(s.synchronizer.overlapping)
    }
}
