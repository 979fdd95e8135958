import PulseCapture
import XCTest

/// The timestamp filters on synthetic measurements with known truth.
final class CaptureClockTests: XCTestCase {
    /// Deterministic noise in [-1, 1).
    struct Noise {
        var state: UInt64
        mutating func next() -> Double {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Double(state >> 11) / Double(1 << 52) - 1
        }
    }

    func testClockTracksDriftingDeviceAndRemovesJitter() {
        // A device 300 ppm fast against CLOCK_MONOTONIC; measurements jitter by +-1 ms; blocks of
        // varying size. After the filter settles, timestamps must follow the truth closely and
        // move smoothly.
        var clock = CaptureClock()
        var noise = Noise(state: 42)
        let truePeriod = 1e9 / 48_000 / 1.0003
        var frames = 0
        var lastOutput = 0.0
        var lastTruth = 0.0
        var worstError = 0.0, worstStep = 0.0
        for i in 0..<6_000 {   // ~2 minutes
            let n = 480 + Int((noise.next() + 1) * 240)
            let truth = 5e12 + Double(frames) * truePeriod
            let measured = Int64(truth + noise.next() * 1_000_000)
            let (time, jump) = clock.update(measured: measured, frames: n)
            XCTAssertNil(jump)
            if i > 1_500 {
                worstError = max(worstError, abs(Double(time) - truth))
                // Step between blocks minus the true step: the jitter the caller sees.
                worstStep = max(worstStep, abs((Double(time) - lastOutput) - (truth - lastTruth)))
            }
            lastOutput = Double(time)
            lastTruth = truth
            frames += n
        }
        XCTAssertLessThan(worstError, 400_000, "timestamps stray \(worstError / 1e6) ms from the truth")
        XCTAssertLessThan(worstStep, 20_000, "block-to-block jitter \(worstStep / 1e3) us")
        XCTAssertEqual(clock.nanosecondsPerFrame, truePeriod, accuracy: truePeriod * 20e-6, "period estimate")
    }

    func testClockStaysMonotonicWithTinyBlocks() {
        // Pulse sometimes hands out chunks of 1-5 frames (21-104 us) between normal ones; a noisy
        // measurement must not put such a block before its predecessor.
        var clock = CaptureClock()
        var noise = Noise(state: 11)
        var frames = 0
        var previous = Int64.min
        for i in 0..<3_000 {
            let n = i % 3 == 0 ? 1 + Int((noise.next() + 1) * 2) : 400 + Int((noise.next() + 1) * 200)
            let truth = 1e12 + Double(frames) * 1e9 / 48_000
            let (time, jump) = clock.update(measured: Int64(truth + noise.next() * 2_000_000), frames: n)
            XCTAssertNil(jump)
            XCTAssertGreaterThan(time, previous, "block \(i) (\(n) frames) goes back in time")
            previous = time
            frames += n
        }
    }

    func testClockRestartsOnAJumpAndReportsIt() {
        var clock = CaptureClock(resyncThreshold: 15_000_000)
        var t = 1e12
        for _ in 0..<100 {
            XCTAssertNil(clock.update(measured: Int64(t), frames: 960).jump)
            t += 20_000_000
        }
        // 40 ms of audio went missing.
        t += 40_000_000
        let (time, jump) = clock.update(measured: Int64(t), frames: 960)
        XCTAssertEqual(Double(jump ?? 0), 40_000_000, accuracy: 100_000)
        XCTAssertEqual(Double(time), t, accuracy: 1_000)
        // And carries on from there.
        t += 20_000_000
        let next = clock.update(measured: Int64(t), frames: 960)
        XCTAssertNil(next.jump)
        XCTAssertEqual(Double(next.time), t, accuracy: 100_000)
    }

    func testClockHeldAudioIsStampedFromTheSettledStart() {
        var clock = CaptureClock()
        clock.restart(at: 1e12, confidence: 6)
        XCTAssertEqual(clock.advance(frames: 1024), 1_000_000_000_000)
        XCTAssertEqual(clock.advance(frames: 1024), 1_000_000_000_000 + Int64((1024 * 1e9 / 48_000).rounded()))
    }

    func testSettlerWaitsForTheStaircaseToEnd() {
        // What a fresh stream's latency did here: 13 ms off for 60 ms, 10.8 ms for 40 ms, then
        // steady at 9 ms (+-0.2 ms).
        var settler = TimelineSettler()
        var noise = Noise(state: 7)
        var framesBefore = 0
        var settled: (start: Double, agreeing: Int)?
        var settledAt = 0
        while settled == nil && framesBefore < 48_000 {
            let ms = Double(framesBefore) / 48.0
            let offset: Double = ms < 60 ? 13 : (ms < 100 ? 10.8 : 9)
            let start = 1e12 + offset * 1e6 + noise.next() * 200_000
            let measured = Int64(start + Double(framesBefore) * 1e9 / 48_000)
            settled = settler.add(measured: measured, framesBefore: framesBefore)
            settledAt = framesBefore
            framesBefore += 480
        }
        let result = try! XCTUnwrap(settled)
        XCTAssertEqual(result.start, 1e12 + 9e6, accuracy: 300_000, "settled on the steady level")
        XCTAssertGreaterThanOrEqual(settledAt, 4_800 + 4_800, "not before 100 ms of agreement")
        XCTAssertLessThan(settledAt, 4_800 + 4_800 + 1_920)
        XCTAssertGreaterThanOrEqual(result.agreeing, 3)
    }

    func testSettlerFallback() {
        var settler = TimelineSettler()
        XCTAssertNil(settler.fallbackStart)
        for (i, v) in [5.0, 1.0, 3.0].enumerated() {
            XCTAssertNil(settler.add(measured: Int64(v * 1e6) + Int64(Double(i * 480) * 1e9 / 48_000),
                                     framesBefore: i * 480))
        }
        XCTAssertEqual(settler.fallbackStart ?? 0, 3e6, accuracy: 1, "median of the newest three")
    }

    func testSlidingMedianIgnoresSpikesAndForgets() throws {
        var median = SlidingMedian(window: 1_000_000_000)
        var noise = Noise(state: 3)
        var out = 0.0
        for i in 0..<500 {
            let time = Int64(i) * 10_000_000
            var v = 9e6 + noise.next() * 100_000
            if i % 5 == 0 { v += (i % 10 == 0 ? 7e6 : -4e6) }   // 20% spikes, both ways
            out = median.add(v, at: time)
            if i > 20 {
                XCTAssertEqual(out, 9e6, accuracy: 200_000, "sample \(i)")
            }
        }
        // A real level change shows once it fills half the window (101 samples of 10 ms: about
        // 50 new ones, a few fewer because the old spikes below the new level leave with the old
        // samples), not before and not long after, and then stays.
        var switchedAfter: Int?
        for k in 1...200 {
            out = median.add(12e6, at: Int64(499 + k) * 10_000_000)
            if switchedAfter == nil && out > 10.5e6 { switchedAfter = k }
            if switchedAfter != nil {
                XCTAssertEqual(out, 12e6, accuracy: 1, "\(k) samples after the change")
            } else {
                XCTAssertEqual(out, 9e6, accuracy: 200_000, "\(k) samples after the change")
            }
        }
        let after = try XCTUnwrap(switchedAfter, "the median never followed the change")
        XCTAssertTrue((42...51).contains(after), "the median followed the change after \(after) samples of 10 ms")
    }
}
