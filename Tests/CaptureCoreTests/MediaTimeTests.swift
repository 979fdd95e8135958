import CaptureCore
import XCTest

/// The media-time units and the conversions between them: exact where the units line up, rounded
/// (or truncated) the way the pipeline always did where they do not, and far from overflow for
/// any recording length.
final class MediaTimeTests: XCTestCase {
    // The formulas the pipeline used before the types (VideoTimebase, Chunker, AudioChannel):
    // the types must give the same numbers, or pts and chunk boundaries would move.
    private func legacyTicks(ns: Int64) -> Int64 { (ns * 9 + 50_000) / 100_000 }
    /// The nearest tick, halves up, in 128-bit arithmetic with a floor division (the old formula
    /// for t >= 0; before zero it truncated toward zero).
    private func nearestTick(ns: Int64) -> Int64 {
        let (q, r) = (Int128(ns) * 9 + 50_000).quotientAndRemainder(dividingBy: 100_000)
        return Int64(r < 0 ? q - 1 : q)
    }
    private func legacyNs(ticks: Int64, perSecond: Int64) -> Int64 { ticks * 1_000_000_000 / perSecond }
    /// The nearest sample frame, halves up, in 128-bit arithmetic with a floor division (the
    /// pipeline's old formula for t >= 0; before zero it truncated toward zero, one frame late).
    private func nearestSample(ns: Int64) -> Int64 {
        let n = Int128(ns) * 48_000 + 500_000_000
        let (q, r) = n.quotientAndRemainder(dividingBy: 1_000_000_000)
        return Int64(r < 0 ? q - 1 : q)
    }

    func testTicksFromMediaTimeRoundToNearest() {
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: 1_000_000_000)).ticks, 90_000)
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: 33_333_333)).ticks, 3000, "a 30 fps slot")
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: 16_666_666)).ticks, 1500, "a 60 fps slot")
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: 5_555)).ticks, 0, "just under half a tick")
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: 5_556)).ticks, 1, "just over half a tick")
        XCTAssertEqual(Ticks90k(rounding: .zero), .zero)
        // Before zero: -0.99999 ticks -> -1, -0.5 -> 0 (halves up), -1.5 -> -1, -3000 exactly.
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: -11_111)).ticks, -1)
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: -5_555)).ticks, 0, "just under half a tick")
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: -5_556)).ticks, -1, "just over half a tick")
        XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: -33_333_333)).ticks, -3000)
    }

    func testTicksToMediaTimeIsExactForMultiplesAndTruncatesOtherwise() {
        XCTAssertEqual(MediaTime(Ticks90k(ticks: 90_000)), MediaTime(nanoseconds: 1_000_000_000))
        XCTAssertEqual(MediaTime(Ticks90k(ticks: 9)), MediaTime(nanoseconds: 100_000))
        XCTAssertEqual(MediaTime(Ticks90k(ticks: 1)).nanoseconds, 11_111, "11 111.1 ns, truncated")
        XCTAssertEqual(MediaTime(Ticks90k(ticks: 3000)).nanoseconds, 33_333_333)
        XCTAssertEqual(Ticks90k(ticks: 3000).mediaTime, MediaTime(Ticks90k(ticks: 3000)))
        // Round trip: every tick comes back as itself.
        for t in stride(from: Int64(0), to: 200_000, by: 7) {
            XCTAssertEqual(Ticks90k(rounding: MediaTime(Ticks90k(ticks: t))).ticks, t)
        }
    }

    func testSampleFramesFromMediaTimeRoundToNearest() {
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: 1_000_000_000)).frames, 48_000)
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: 10_416)).frames, 0, "just under half a frame")
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: 10_417)).frames, 1, "just over half a frame")
        // Before the session's zero too: -1.44 frames -> -1, -1.92 -> -2, exactly -480 -> -480.
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: -30_000)).frames, -1)
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: -40_000)).frames, -2)
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: -10_000_000)).frames, -480)
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: -10_416)).frames, 0, "just under half a frame")
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: -10_417)).frames, -1, "just over half a frame")
        XCTAssertEqual(MediaTime(SampleFrames(frames: 48_000)), MediaTime(nanoseconds: 1_000_000_000))
        XCTAssertEqual(MediaTime(SampleFrames(frames: 3)).nanoseconds, 62_500, "exact for multiples of 3")
        XCTAssertEqual(MediaTime(SampleFrames(frames: 1)).nanoseconds, 20_833, "20 833.3 ns, truncated")
        XCTAssertEqual(SampleFrames.block.mediaTime.nanoseconds, 21_333_333)
    }

    /// The same numbers as the formulas they replace, over ranges and random values (either
    /// sign where the pipeline sees either sign).
    func testConversionsAgreeWithThePipelinesFormulas() {
        var rng = SystemRandomNumberGenerator()
        var values: [Int64] = Array(stride(from: -2_000_000, through: 2_000_000, by: 997))
        for _ in 0..<100_000 { values.append(Int64.random(in: -1_000_000_000_000...100_000_000_000_000, using: &rng)) }
        for ns in values {
            XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: ns)).frames, nearestSample(ns: ns), "\(ns) ns")
            XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: ns)).ticks, nearestTick(ns: ns), "\(ns) ns")
            if ns >= 0 { XCTAssertEqual(Ticks90k(rounding: MediaTime(nanoseconds: ns)).ticks, legacyTicks(ns: ns), "\(ns) ns") }
        }
        for _ in 0..<100_000 {
            let t = Int64.random(in: 0...9_000_000_000, using: &rng)
            XCTAssertEqual(MediaTime(Ticks90k(ticks: t)).nanoseconds, legacyNs(ticks: t, perSecond: 90_000), "\(t) ticks")
            XCTAssertEqual(MediaTime(SampleFrames(frames: t)).nanoseconds, legacyNs(ticks: t, perSecond: 48_000), "\(t) frames")
        }
    }

    /// The old `ns * 48000` overflowed after 53 hours, the chunker's `ticks * 1e9` after 28 (video)
    /// and 53 hours (audio): a long recording would have trapped. Now a year is nothing.
    func testNoOverflowWithinAYear() {
        let year = MediaTime(nanoseconds: 365 * 86_400 * 1_000_000_000)
        XCTAssertEqual(SampleFrames(rounding: year).frames, 365 * 86_400 * 48_000)
        XCTAssertEqual(Ticks90k(rounding: year).ticks, 365 * 86_400 * 90_000)
        XCTAssertEqual(MediaTime(Ticks90k(ticks: 365 * 86_400 * 90_000)), year)
        XCTAssertEqual(MediaTime(SampleFrames(frames: 365 * 86_400 * 48_000)), year)
        // 200 hours, far past where the old sample formula overflowed, still rounds to nearest.
        let hours200: Int64 = 200 * 3600 * 1_000_000_000
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: hours200 + 10_417)).frames, 200 * 3600 * 48_000 + 1)
        XCTAssertEqual(SampleFrames(rounding: MediaTime(nanoseconds: hours200 + 10_416)).frames, 200 * 3600 * 48_000)
    }

    func testArithmeticAndTheChunkGrid() {
        let chunk = MediaTime(nanoseconds: 1_000_000_000)
        XCTAssertEqual(MediaTime(nanoseconds: 2_999_999_999) / chunk, 2)
        XCTAssertEqual(MediaTime(nanoseconds: 3_000_000_000) / chunk, 3)
        XCTAssertEqual(chunk * 3, MediaTime(nanoseconds: 3_000_000_000))
        XCTAssertEqual(chunk + chunk - MediaTime(nanoseconds: 1), MediaTime(nanoseconds: 1_999_999_999))
        XCTAssertEqual(MediaTime.frameSlot(1, fps: 30).nanoseconds, 33_333_333)
        XCTAssertEqual(MediaTime.frameSlot(30, fps: 30), chunk)
        XCTAssertEqual(chunk.duration, .seconds(1))
        XCTAssertLessThan(MediaTime.zero, chunk)
        XCTAssertEqual(Ticks90k.framePeriod(fps: 30), Ticks90k(ticks: 3000))
        XCTAssertEqual(Ticks90k.framePeriod(fps: 60) * 2, Ticks90k(ticks: 3000))
        XCTAssertEqual(Ticks90k(ticks: 5) - Ticks90k(ticks: 2) + Ticks90k(ticks: 1), Ticks90k(ticks: 4))
        var s = SampleFrames.zero
        s += .block
        s -= SampleFrames(frames: 24)
        XCTAssertEqual(s, SampleFrames(frames: 1000))
        XCTAssertEqual(-s, SampleFrames(frames: -1000))
        XCTAssertEqual(Ticks90k.rate, 90_000)
        XCTAssertEqual(SampleFrames.rate, Int64(AudioFormat.sampleRate))
        XCTAssertEqual(Ticks90k(streamUnits: 42).streamUnits, 42)
        XCTAssertEqual(SampleFrames(streamUnits: 42).frames, 42)
    }

    /// They are the size of the integer they wrap: arrays and rings of them cost no more.
    func testLayoutIsOneInt64() {
        XCTAssertEqual(MemoryLayout<MediaTime>.size, 8)
        XCTAssertEqual(MemoryLayout<Ticks90k>.size, 8)
        XCTAssertEqual(MemoryLayout<SampleFrames>.size, 8)
    }
}
