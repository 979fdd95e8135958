/// Turns per-block capture-time measurements (monotonic "now" minus the stream latency, which
/// jitters by scheduling and by the server's timing updates) into timestamps that advance with the
/// sample count, while still tracking the device clock's drift against CLOCK_MONOTONIC.
///
/// It is a second-order delay-locked loop, the filter FFmpeg's pulse input uses (`ff_timefilter`,
/// after Fons Adriaensen, "Using a DLL to filter time"): the prediction for a block is the previous
/// block's time plus its frame count times the estimated frame period; the measurement error
/// corrects the time with gain `b` and the period with gain `c`. During the first blocks the time
/// gain is `1/count`, so the start is a running average rather than the first (noisiest) sample.
///
/// A measurement further than `resyncThreshold` from the prediction means audio was lost or the
/// stream restarted: the filter restarts at the measured time and reports the jump. Otherwise the
/// output is strictly increasing (each correction is limited to half the previous block).
///
/// A value type with no storage beyond a few numbers: updating never allocates.
public struct CaptureClock: Sendable {
    public static let nominalNanosecondsPerFrame = 1e9 / 48_000.0

    /// Loop bandwidth in Hz. 0.05 Hz: the period estimate settles in a few seconds and measurement
    /// jitter is attenuated about 20 times.
    public let bandwidth: Double
    /// Distance (ns) between prediction and measurement beyond which the filter restarts.
    public let resyncThreshold: Double

    /// Estimated nanoseconds per frame (the source clock against CLOCK_MONOTONIC).
    public private(set) var nanosecondsPerFrame: Double = CaptureClock.nominalNanosecondsPerFrame
    private var next: Double = 0      // predicted start of the next block (ns)
    private var lastFrames: Int = 0
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

    /// Starts a time line whose next block begins at `time` (ns), trusted as much as `confidence`
    /// measurements would be (the time gain starts at 1/(confidence+1)).
    public mutating func restart(at time: Double, confidence: Int) {
        next = time
        lastFrames = 0
        count = max(1, confidence)
    }

    /// The time of a block that follows the previous one without a measurement (audio that was
    /// held back while the time line settled).
    public mutating func advance(frames: Int) -> Int64 {
        let t = next
        next = t + Double(frames) * nanosecondsPerFrame
        lastFrames = frames
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
                // Loop gains for this update interval (the previous block's duration).
                let omega = 2 * Double.pi * bandwidth * Double(lastFrames) * nanosecondsPerFrame * 1e-9
                let b = max(2.0.squareRoot() * omega, 1.0 / Double(count))
                let c = omega * omega
                // Never move a block by more than half the previous block's length: with tiny
                // blocks (pulse hands out chunks of a few frames at times) a full correction could
                // put a block before its predecessor. Time stays strictly increasing.
                let limit = 0.5 * Double(lastFrames) * nanosecondsPerFrame
                t = next + min(max(b * error, -limit), limit)
                if lastFrames > 0 {
                    nanosecondsPerFrame += c * error / Double(lastFrames)
                    // A real device is within a few hundred ppm of nominal; never let noise push it far.
                    let nominal = Self.nominalNanosecondsPerFrame
                    nanosecondsPerFrame = min(max(nanosecondsPerFrame, nominal * 0.99), nominal * 1.01)
                }
            }
        }
        next = t + Double(frames) * nanosecondsPerFrame
        lastFrames = frames
        return (Int64(t.rounded()), jump)
    }
}

/// Finds where a new stream's time line really starts.
///
/// Right after a record stream connects (or moves), libpulse's latency is stale for a few blocks:
/// the server is still shrinking the device's latency to the 20 ms we asked for, so "now - latency"
/// can be off by 2-150 ms for the first 1-10 blocks while the audio itself is continuous. Each
/// block implies a start time for the stream, `measured - framesBefore * period`; once the last few
/// implied starts agree (within `tolerance`, over at least `minimumSpanFrames` of audio) the time
/// line is known, and audio held back meanwhile can be stamped from it.
///
/// Fixed-size storage (InlineArray): adding never allocates.
public struct TimelineSettler: Sendable {
    public static let window = 32
    public let tolerance: Double
    public let minimumCount: Int
    public let minimumSpanFrames: Int
    private var starts = InlineArray<32, Double>(repeating: 0)
    private var positions = InlineArray<32, Int>(repeating: 0)
    private var count = 0

    /// Defaults: 6 blocks within 1 ms of each other, covering at least 100 ms of audio (the
    /// latency can step down in stages for ~100 ms after a stream starts; measured).
    public init(tolerance: Double = 1_000_000, minimumCount: Int = 6, minimumSpanFrames: Int = 4_800) {
        self.tolerance = tolerance
        self.minimumCount = minimumCount
        self.minimumSpanFrames = minimumSpanFrames
    }

    public mutating func reset() { count = 0 }

    public var isEmpty: Bool { count == 0 }

    /// Adds the measured time of a block that starts `framesBefore` frames into the stream. Returns
    /// the stream's start time (ns; the middle of the agreeing measurements' range) once the
    /// recent measurements agree, and how many agreed.
    public mutating func add(measured: Int64, framesBefore: Int) -> (start: Double, agreeing: Int)? {
        let implied = Double(measured) - Double(framesBefore) * CaptureClock.nominalNanosecondsPerFrame
        if count == Self.window {
            for i in 1..<Self.window {
                starts[i - 1] = starts[i]
                positions[i - 1] = positions[i]
            }
            count -= 1
        }
        starts[count] = implied
        positions[count] = framesBefore
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
        if n >= minimumCount && framesBefore - positions[count - n] >= minimumSpanFrames {
            return ((lo + hi) / 2, n)
        }
        return nil
    }

    /// Best guess when the measurements never agreed: the median of the newest three.
    public var fallbackStart: Double? {
        guard count > 0 else { return nil }
        let a = starts[count - 1]
        guard count >= 3 else { return a }
        let b = starts[count - 2], c = starts[count - 3]
        return max(min(a, b), min(max(a, b), c))
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
