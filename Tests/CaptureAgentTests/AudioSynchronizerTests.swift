import CaptureCore
@testable import CapturePipeline
import XCTest

/// The audio channel's one timing owner, driven with blocks whose capture times straddle the
/// session's zero, leave holes, follow a reported break, and run past the timeline's end. What
/// it decides is written by a writer that keeps the stream the way AudioChannel does.
final class AudioSynchronizerTests: XCTestCase {
    /// A stream: where it has got to, and each write as placed (with the first sample written).
    final class Stream: AudioSynchronizer.Writer {
        var streamEnd = SampleFrames.zero
        var timelineEnd = SampleFrames(frames: .max)
        var writes: [(frames: Int, placement: AudioSynchronizer.Placement, firstSample: Float)] = []

        func write(_ samples: UnsafePointer<Float>, frames: Int, _ placement: AudioSynchronizer.Placement) {
            let kept = frames - min(placement.skip, frames)
            let first = kept > 0 ? samples[placement.skip * AudioFormat.channels] : .nan
            writes.append((frames, placement, first))
            streamEnd += placement.silence + SampleFrames(frames: Int64(placement.repeats + kept))
        }
    }

    static let zero: Int64 = 5_000_000_000              // the session's zero, CLOCK_MONOTONIC ns
    static let ms: Int64 = 1_000_000

    /// A block of `frames` stereo frames, every sample `value`.
    private func block(_ frames: Int, _ value: Float) -> [Float] {
        [Float](repeating: value, count: frames * AudioFormat.channels)
    }

    private func admit(_ sync: inout AudioSynchronizer, _ samples: [Float], at captureTime: Int64, running: Bool = true,
                       into stream: Stream) {
        samples.withUnsafeBufferPointer {
            sync.admit($0.baseAddress!, frames: samples.count / AudioFormat.channels, captureTime: captureTime,
                       running: running, sessionZero: Self.zero, into: stream)
        }
    }

    /// The block that straddles the zero arrives before the session runs: it is kept, and when
    /// the session runs its part from the zero on goes first, then the new block right after it.
    func testAudioFromBeforeTheStartIsKeptAndItsPartFromTheZeroOnComesFirst() {
        var sync = AudioSynchronizer(prerollFrames: 24_000)
        let stream = Stream()
        admit(&sync, block(960, 1), at: Self.zero - 10 * Self.ms, running: false, into: stream)   // 20 ms, 10 before zero
        XCTAssertTrue(stream.writes.isEmpty, "nothing is written before the session runs")
        admit(&sync, block(960, 2), at: Self.zero + 10 * Self.ms, into: stream)
        XCTAssertEqual(stream.writes.count, 2)
        XCTAssertEqual(stream.writes[0].placement, AudioSynchronizer.Placement(skip: 480, first: true),
                       "the 10 ms before the zero are left out, no lead")
        XCTAssertEqual(stream.writes[0].firstSample, 1, "the kept audio")
        XCTAssertEqual(stream.writes[1].placement, AudioSynchronizer.Placement(), "the next block follows without a seam")
        XCTAssertEqual(stream.writes[1].firstSample, 2)
        XCTAssertEqual(stream.streamEnd, SampleFrames(frames: 480 + 960))
    }

    /// Kept audio that lies wholly before the zero goes nowhere; the first audio after the zero
    /// gets a lead of silence up to where it was captured.
    func testAudioWhollyBeforeTheZeroIsDroppedAndALeadIsSilence() {
        var sync = AudioSynchronizer(prerollFrames: 24_000)
        let stream = Stream()
        admit(&sync, block(960, 1), at: Self.zero - 100 * Self.ms, running: false, into: stream)
        admit(&sync, block(960, 2), at: Self.zero + 5 * Self.ms, into: stream)
        XCTAssertEqual(stream.writes.count, 1)
        XCTAssertEqual(stream.writes[0].placement, AudioSynchronizer.Placement(silence: SampleFrames(frames: 240), first: true))
        XCTAssertEqual(stream.writes[0].firstSample, 2)
        XCTAssertTrue(sync.started)
    }

    /// Kept audio that a later block does not follow (a gap of more than 2 ms) is replaced by it.
    func testKeptAudioIsReplacedByABlockThatDoesNotFollowIt() {
        var sync = AudioSynchronizer(prerollFrames: 24_000)
        let stream = Stream()
        admit(&sync, block(960, 1), at: Self.zero - 50 * Self.ms, running: false, into: stream)
        admit(&sync, block(960, 3), at: Self.zero - 5 * Self.ms, running: false, into: stream)   // 25 ms after A's end
        admit(&sync, block(960, 2), at: Self.zero + 15 * Self.ms, into: stream)
        XCTAssertEqual(stream.writes.first?.placement, AudioSynchronizer.Placement(skip: 240, first: true))
        XCTAssertEqual(stream.writes.first?.firstSample, 3, "only the second block was kept")
    }

    /// After the start a 3 ms hole is timing noise, nudged a frame at a time; right after the
    /// source reported a break it is a hole, filled with silence at once; and once only.
    func testAReportedBreakFillsEvenASmallHoleAtOnce() {
        var sync = AudioSynchronizer(prerollFrames: 24_000)
        let stream = Stream()
        admit(&sync, block(960, 1), at: Self.zero, into: stream)
        admit(&sync, block(960, 1), at: Self.zero + 23 * Self.ms, into: stream)                  // 3 ms late
        XCTAssertEqual(stream.writes[1].placement, AudioSynchronizer.Placement(repeats: 3), "nudged by at most 960 / 256")
        let late = Self.zero + Int64(Double(stream.streamEnd.frames) * 1e9 / 48_000) + 3 * Self.ms
        sync.discontinued()
        admit(&sync, block(960, 1), at: late, into: stream)
        XCTAssertEqual(stream.writes[2].placement, AudioSynchronizer.Placement(silence: SampleFrames(frames: 144)))
        admit(&sync, block(960, 1), at: late + 20 * Self.ms + 3 * Self.ms, into: stream)
        XCTAssertEqual(stream.writes[3].placement, AudioSynchronizer.Placement(repeats: 3), "the break is over")
    }

    /// Nothing is written once the stream has reached the timeline's end.
    func testNothingIsPlacedAtTheTimelinesEnd() {
        var sync = AudioSynchronizer(prerollFrames: 24_000)
        let stream = Stream()
        stream.timelineEnd = SampleFrames(frames: 960)
        admit(&sync, block(960, 1), at: Self.zero, into: stream)
        admit(&sync, block(960, 1), at: Self.zero + 20 * Self.ms, into: stream)
        XCTAssertEqual(stream.writes.count, 1)
    }
}
