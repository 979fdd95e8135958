import CaptureCore

/// Turns capture-time measurements (taken from the server's timing reports, which jitter by
/// scheduling and by when the server answered) into timestamps that advance with the sample
/// count, while still tracking the device clock's drift against CLOCK_MONOTONIC.
///
/// It is a second-order delay-locked loop, the filter FFmpeg's pulse input uses (`ff_timefilter`,
/// after Fons Adriaensen, "Using a DLL to filter time"): the prediction for a block is the previous
/// block's time plus its frame count times the estimated frame period; a measurement's error
/// corrects the time with gain `b` and the period with gain `c`, both scaled to the audio since
/// the previous measurement (blocks in between just `advance`). During the first measurements the
/// time gain is `1/count`, so the start is a running average rather than the first (noisiest)
/// sample.
///
/// A measurement further than `resyncThreshold` from the prediction makes the filter restart at
/// the measured time and report the jump (`StreamTimeline` passes `.infinity` and decides about
/// jumps itself, after a second report confirms them). Otherwise the output is strictly
/// increasing (each correction is limited to half the previous block).
///
/// A value type with no storage beyond a few numbers: updating never allocates.
public struct CaptureClock: Sendable {
    /// A sample frame's length at the nominal rate (Double: the filter's own unit; the frame
    /// counts and times it multiplies stay inside this loop and `StreamTimeline`).
    public static let nominalNanosecondsPerFrame = 1e9 / Double(SampleFrames.rate)

    /// Loop bandwidth in Hz. 0.05 Hz: the period estimate settles in a few seconds and measurement
    /// jitter is attenuated about 20 times.
    public let bandwidth: Double
    /// Distance (ns) between prediction and measurement beyond which the filter restarts.
    public let resyncThreshold: Double

    /// Estimated nanoseconds per frame (the source clock against CLOCK_MONOTONIC).
    public private(set) var nanosecondsPerFrame: Double = CaptureClock.nominalNanosecondsPerFrame
    private var next: Double = 0      // predicted start of the next block (ns)
    private var lastFrames: Int = 0   // the previous block's length
    private var interval: Int = 0     // frames since the previous measurement
    private var count: Int = 0

    public init(bandwidth: Double = 0.05, resyncThreshold: Double = 20_000_000) {
        self.bandwidth = bandwidth
        self.resyncThreshold = resyncThreshold
    }

    /// Forget the time line (after a discontinuity). The period estimate is kept unless
    /// `keepPeriod` is false.
    public mutating func reset(keepPeriod: Bool = true) {
        count = 0
        if !keepPeriod { nanosecondsPerFrame = Self.nominalNanosecondsPerFrame }
    }

    /// True before the first block after a reset.
    public var isReset: Bool { count == 0 }

    /// The predicted time of the next block's first frame (meaningless while `isReset`).
    public var predictedNext: Double { next }

    /// Starts a time line whose next block begins at `time` (ns), trusted as much as `confidence`
    /// measurements would be (the time gain starts at 1/(confidence+1)).
    public mutating func restart(at time: Double, confidence: Int) {
        next = time
        lastFrames = 0
        interval = 0
        count = max(1, confidence)
    }

    /// The time of a block that follows the previous one without a measurement of its own.
    public mutating func advance(frames: Int) -> Int64 {
        let t = next
        next = t + Double(frames) * nanosecondsPerFrame
        lastFrames = frames
        interval += frames
        return Int64(t.rounded())
    }

    /// Feeds the measured capture time of a block's first frame and the block's length. Returns the
    /// smoothed time for that first frame, and the jump (measured minus predicted, ns) when the
    /// filter had to restart.
    public mutating func update(measured: Int64, frames: Int) -> (time: Int64, jump: Int64?) {
        let m = Double(measured)
        var jump: Int64? = nil
        var t: Double
        if count == 0 {
            t = m
            count = 1
        } else {
            let error = m - next
            if abs(error) > resyncThreshold {
                jump = Int64(error)
                t = m
                count = 1
            } else {
                count += 1
                // Loop gains for this update interval (the audio since the previous measurement).
                let omega = 2 * Double.pi * bandwidth * Double(interval) * nanosecondsPerFrame * 1e-9
                let b = max(2.0.squareRoot() * omega, 1.0 / Double(count))
                let c = omega * omega
                // Never move a block by more than half the previous block's length: with tiny
                // blocks (pulse hands out chunks of a few frames at times) a full correction could
                // put a block before its predecessor. Time stays strictly increasing.
                let limit = 0.5 * Double(lastFrames) * nanosecondsPerFrame
                t = next + min(max(b * error, -limit), limit)
                if interval > 0 {
                    nanosecondsPerFrame += c * error / Double(interval)
                    // A real device is within a few hundred ppm of nominal; never let noise push it far.
                    let nominal = Self.nominalNanosecondsPerFrame
                    nanosecondsPerFrame = min(max(nanosecondsPerFrame, nominal * 0.99), nominal * 1.01)
                }
            }
        }
        next = t + Double(frames) * nanosecondsPerFrame
        lastFrames = frames
        interval = frames
        return (Int64(t.rounded()), jump)
    }
}

/// Finds where a new stream's time line really starts.
///
/// Right after a record stream connects (or moves), the server's timing is stale for a while:
/// it is still shrinking the device's latency to the 20 ms we asked for, so a report can be off
/// by 2-150 ms for the first 100-200 ms while the audio itself is continuous. Each report implies
/// a start time for the stream, `measured - framesBefore * period`; once the last few implied
/// starts agree (within `tolerance`, over at least `minimumSpanFrames` of audio or
/// `minimumSpanNs` of time between the reports) the time line is known, and audio held back
/// meanwhile can be stamped from it. (Time counts as well as audio: a source that delivers in
/// bursts sends reports between its bursts, when no audio arrives.)
///
/// Fixed-size storage (InlineArray): adding never allocates.
public struct TimelineSettler: Sendable {
    public static let window = 32
    public let tolerance: Double
    public let minimumCount: Int
    public let minimumSpanFrames: Int
    public let minimumSpanNs: Int64
    private var starts = InlineArray<32, Double>(repeating: 0)
    private var positions = InlineArray<32, Int>(repeating: 0)
    private var times = InlineArray<32, Int64>(repeating: 0)
    private var count = 0

    /// Defaults: 3 reports within 1 ms of each other, covering at least 100 ms of audio or of time
    /// (the latency can step down in stages for ~100 ms after a stream starts; measured).
    public init(tolerance: Double = 1_000_000, minimumCount: Int = 3, minimumSpanFrames: Int = 4_800,
                minimumSpanNs: Int64 = 100_000_000) {
        self.tolerance = tolerance
        self.minimumCount = minimumCount
        self.minimumSpanFrames = minimumSpanFrames
        self.minimumSpanNs = minimumSpanNs
    }

    public mutating func reset() { count = 0 }

    public var isEmpty: Bool { count == 0 }

    /// Adds the measured time of the frame `framesBefore` frames into the stream, taken at `now`.
    /// Returns the stream's start time (ns; the middle of the agreeing measurements' range) once
    /// the recent measurements agree, and how many agreed.
    public mutating func add(measured: Int64, framesBefore: Int, at now: Int64 = 0) -> (start: Double, agreeing: Int)? {
        let implied = Double(measured) - Double(framesBefore) * CaptureClock.nominalNanosecondsPerFrame
        if count == Self.window {
            for i in 1..<Self.window {
                starts[i - 1] = starts[i]
                positions[i - 1] = positions[i]
                times[i - 1] = times[i]
            }
            count -= 1
        }
        starts[count] = implied
        positions[count] = framesBefore
        times[count] = now
        count += 1
        // The longest run of newest measurements that agree.
        var lo = implied, hi = implied
        var n = 1
        var i = count - 2
        while i >= 0 {
            let v = starts[i]
            let newLo = min(lo, v), newHi = max(hi, v)
            if newHi - newLo > tolerance { break }
            lo = newLo; hi = newHi; n += 1
            i -= 1
        }
        let oldest = count - n
        if n >= minimumCount
            && (framesBefore - positions[oldest] >= minimumSpanFrames || now - times[oldest] >= minimumSpanNs)
        {
            return ((lo + hi) / 2, n)
        }
        return nil
    }

    /// Best guess when the measurements never agreed (a server whose reports keep swinging by a
    /// few ms): the median of those in the window.
    public var fallbackStart: Double? {
        guard count > 0 else { return nil }
        var sorted = InlineArray<32, Double>(repeating: 0)
        for i in 0..<count {
            let v = starts[i]
            var j = i
            while j > 0 && sorted[j - 1] > v {
                sorted[j] = sorted[j - 1]
                j -= 1
            }
            sorted[j] = v
        }
        return count % 2 == 1 ? sorted[count / 2] : (sorted[count / 2 - 1] + sorted[count / 2]) / 2
    }
}

/// The median of the values added during the last `window` nanoseconds (at most 128 values).
///
/// Latency measurements built from libpulse's raw timing info are exact most of the time but
/// spike by a few milliseconds either way now and then (audio in flight between the server's
/// threads when it answered, a late sink thread; measured on a null sink: spikes of -4..+7 ms
/// around a level stable to ~0.2 ms). The median of the recent implied stream starts ignores them.
///
/// Fixed-size storage (InlineArray): adding never allocates.
public struct SlidingMedian: Sendable {
    public static let capacity = 128
    public let window: Int64
    private var times = InlineArray<128, Int64>(repeating: 0)
    private var values = InlineArray<128, Double>(repeating: 0)
    private var scratch = InlineArray<128, Double>(repeating: 0)
    private var first = 0
    private var count = 0

    public init(window: Int64 = 1_000_000_000) {
        self.window = window
    }

    public mutating func reset() {
        first = 0
        count = 0
    }

    public var isEmpty: Bool { count == 0 }

    /// Adds `value` observed at `time` (ns) and returns the median over the window.
    public mutating func add(_ value: Double, at time: Int64) -> Double {
        let cap = Self.capacity
        while count > 0 && (count == cap || times[first] < time - window) {
            first = (first + 1) % cap
            count -= 1
        }
        let slot = (first + count) % cap
        times[slot] = time
        values[slot] = value
        count += 1
        for i in 0..<count { scratch[i] = values[(first + i) % cap] }
        return Self.select(&scratch, count: count, k: count / 2)
    }

    /// The k-th smallest of the first `count` values (Hoare's quickselect, in place).
    private static func select(_ a: inout InlineArray<128, Double>, count: Int, k: Int) -> Double {
        var lo = 0, hi = count - 1
        while lo < hi {
            let pivot = a[(lo + hi) / 2]
            var i = lo, j = hi
            while i <= j {
                while a[i] < pivot { i += 1 }
                while a[j] > pivot { j -= 1 }
                if i <= j {
                    let t = a[i]; a[i] = a[j]; a[j] = t
                    i += 1; j -= 1
                }
            }
            if k <= j { hi = j } else if k >= i { lo = i } else { break }
        }
        return a[k]
    }
}
