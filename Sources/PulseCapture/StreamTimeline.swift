import CaptureCore

/// Places one record stream's audio on CLOCK_MONOTONIC: the hot path between libpulse's blocks
/// and the sink, with no libpulse in it, so unit tests drive it with synthetic block timings.
///
/// What comes in: blocks of interleaved stereo Float32 bytes (any size, any alignment, at times a
/// partial frame), each with the time it arrived and, when the server sent a new timing report
/// since the previous block, a `Measurement`: the capture time of the block's first frame
/// computed from that report. Reports also arrive between blocks (`observe`). What goes out
/// (`Output`): whole frames with the capture time of their first frame, strictly increasing and
/// following the sample count; and `.jump` when the time line really moved.
///
/// The sample count is the truth for a stream that pulse reports continuous; the reports only say
/// where it lies in time. One report extrapolated over the blocks after it is one measurement, not
/// many: only a new report counts. So:
/// - **Settling.** After a start, move or reconnect the reports are stale for a while (see
///   `TimelineSettler`). Audio is held (up to `holdFrames`, 4 s: a source that hands out 2 s
///   bursts delivers its first burst before the server has sent any report) until three reports
///   agree, then released with times from the settled start.
/// - **Running.** Each report goes through the median of the recent implied starts (spikes of a
///   few ms) into the delay-locked loop (`CaptureClock`); blocks in between advance by their
///   length.
/// - **Suspect.** A report further than `resyncThreshold` from the prediction is not believed on
///   its own (libpulse's index bookkeeping can be off by a whole block for a report processed while
///   a burst arrives: measured here, -167 ms and -1.5 s on PulseAudio 16's sine source). Audio is
///   held until the next report: if it agrees with the old time line the suspect one was wrong
///   and nothing happened; if it agrees with the suspect one, the stream really moved (audio lost
///   upstream, a device that stalled): `.jump`, and the held audio is placed on the new time line,
///   so the hole before it is exactly where the audio went missing.
///
/// Measurements without a server report (libpulse's interpolated latency, "the newest frame is
/// now") are not used: for a bursty source they are wrong by up to the burst. The arrival time is
/// only the last resort when the hold fills up with no report at all.
///
/// Storage is allocated once (the hold buffer, 1.5 MB, and a small staging buffer for partial
/// frames); pushing never allocates. Not thread-safe: the owner serialises every call.
public struct StreamTimeline: ~Copyable {
    /// A capture time computed from one server timing report.
    public struct Measurement: Sendable, Equatable {
        /// CLOCK_MONOTONIC ns at which the first frame of the block it comes with (for `observe`:
        /// the next frame to arrive) entered the source.
        public var captureTime: Int64
        /// Identifies the report (its server timestamp): the same report seen again is no news.
        public var report: Int64

        public init(captureTime: Int64, report: Int64) {
            self.captureTime = captureTime
            self.report = report
        }
    }

    /// What the timeline hands on. `samples` is valid only during the call.
    public enum Output {
        case audio(UnsafeBufferPointer<Float>, frameCount: Int, captureTime: Int64)
        /// The time line moved by this much (ns; measured minus predicted) before the audio that follows.
        case jump(Int64)
    }

    public enum Phase: Equatable { case settling, running, suspect }

    public static let bytesPerFrame = AudioFormat.channels * MemoryLayout<Float>.size
    public let holdFrames: Int
    /// A report further than this from the prediction is suspect (ns).
    public let resyncThreshold: Double
    /// Two suspect reports that agree this closely confirm a jump (ns).
    public let confirmTolerance: Double

    public private(set) var phase: Phase = .settling
    /// Frames pushed since the last restart (delivered or held).
    public private(set) var position = 0
    /// The largest delay seen between a frame's capture and its delivery (ns): how long the audio
    /// of a given instant may take to come out (a stop waits that long for the end).
    public private(set) var maxLatenessNs: Int64 = 0
    /// Capture time just after the last frame delivered (nil: nothing delivered since the restart).
    public private(set) var deliveredEnd: Int64?

    private var clock = CaptureClock(resyncThreshold: .infinity)
    private var settler = TimelineSettler()
    private var recentStarts = SlidingMedian()
    private var lastReport: Int64?
    /// Suspect: the stream start the suspect report implies.
    private var suspectStart: Double = 0
    /// Settling: when the reports have had long enough to agree (set by the first report).
    private var settleDeadline: Int64 = .max
    /// How long the reports of a settling stream may disagree before the median of them is
    /// taken: some servers never agree within a millisecond (a fresh PulseAudio null sink fed by
    /// a client with 200 ms of buffer swings by +-5 ms, report after report; measured).
    public static let settleTimeNs: Int64 = 500_000_000

    private let staging: UnsafeMutableRawPointer
    private let stagingCapacity = 4_096 * StreamTimeline.bytesPerFrame
    private var stagingBytes = 0
    private let hold: UnsafeMutableRawPointer
    private var heldFrames = 0
    /// `position` of the first held frame.
    private var holdStart = 0

    public init(holdSeconds: Int = 4, resyncThresholdNs: Double = 15_000_000, confirmToleranceNs: Double = 3_000_000) {
        holdFrames = holdSeconds * AudioFormat.sampleRate
        resyncThreshold = resyncThresholdNs
        confirmTolerance = confirmToleranceNs
        staging = .allocate(byteCount: stagingCapacity, alignment: 16)
        hold = .allocate(byteCount: holdFrames * Self.bytesPerFrame, alignment: 16)
    }

    deinit {
        staging.deallocate()
        hold.deallocate()
    }

    private static let period = CaptureClock.nominalNanosecondsPerFrame

    /// Forgets the time line (the stream started, moved, resumed or had a hole), and any held
    /// audio and partial frame (the caller reports the gap). With `settle`, audio is held until
    /// new reports agree; without, the next report starts the new time line at once.
    public mutating func restart(settle: Bool = true) {
        clock.reset()
        settler.reset()
        recentStarts.reset()
        stagingBytes = 0
        heldFrames = 0
        position = 0
        holdStart = 0
        lastReport = nil
        deliveredEnd = nil
        settleDeadline = .max
        phase = settle ? .settling : .running
    }

    /// Forgets the largest lateness seen (a new stream).
    public mutating func resetLateness() { maxLatenessNs = 0 }

    /// Audio from the stream. `emit` returns false when the consumer stopped the stream; then
    /// nothing more is emitted and `push` returns false.
    @discardableResult
    public mutating func push(_ data: UnsafeRawPointer, bytes: Int, measurement: Measurement?, now: Int64,
                              emit: (Output) -> Bool) -> Bool {
        let bpf = Self.bytesPerFrame
        // Only a new report is news; the measurement belongs to the block's first frame.
        let fresh = stagingBytes == 0 ? measurement.flatMap { isNew($0) ? $0 : nil } : nil
        if stagingBytes == 0 && bytes % bpf == 0 && Int(bitPattern: data) % 4 == 0 {
            return place(data, frames: bytes / bpf, fresh: fresh, now: now, emit: emit)
        }
        // Rare: a partial frame or a misaligned chunk. Reassemble whole frames in `staging`; the
        // measurement belongs to the first whole frame that comes out.
        var offset = 0
        var m = fresh
        while offset < bytes {
            let n = min(stagingCapacity - stagingBytes, bytes - offset)
            (staging + stagingBytes).copyMemory(from: data + offset, byteCount: n)
            stagingBytes += n
            offset += n
            let whole = stagingBytes / bpf * bpf
            if whole > 0 {
                if !place(UnsafeRawPointer(staging), frames: whole / bpf, fresh: m, now: now, emit: emit) {
                    return false
                }
                m = nil
                let rest = stagingBytes - whole
                if rest > 0 { staging.copyMemory(from: staging + whole, byteCount: rest) }
                stagingBytes = rest
            }
        }
        return true
    }

    /// A report that came between blocks: `measurement` is the capture time of the next frame to
    /// arrive (the one at `position`). Settling and suspect streams need it (a source that sends
    /// bursts sends nothing else for seconds); a running one takes it with its next block, which
    /// comes with the same report.
    @discardableResult
    public mutating func observe(_ measurement: Measurement, now: Int64, emit: (Output) -> Bool) -> Bool {
        switch phase {
        case .running:
            return true
        case .settling:
            // Before the first audio a report describes a stream that is not flowing yet.
            guard position > 0, isNew(measurement) else { return true }
            return settle(with: measurement, now: now, emit: emit)
        case .suspect:
            guard isNew(measurement) else { return true }
            return judgeSuspect(measurement, now: now, emit: emit)
        }
    }

    /// Releases held audio with the best estimate there is (the stream ends, or went quiet and the
    /// caller will not wait any longer).
    @discardableResult
    public mutating func flush(now: Int64, emit: (Output) -> Bool) -> Bool {
        switch phase {
        case .settling:
            guard heldFrames > 0 else { return true }
            return releaseHeld(at: settlingFallbackStart(now: now, arrivingFrames: 0), confidence: 2, now: now, emit: emit)
        case .suspect:
            // Never confirmed: the old time line stands.
            return releaseHeldOnClock(now: now, emit: emit)
        case .running:
            return true
        }
    }

    // MARK: - Placing blocks

    /// `fresh`: a new report's capture time for this block's first frame.
    private mutating func place(_ data: UnsafeRawPointer, frames: Int, fresh: Measurement?, now: Int64,
                                emit: (Output) -> Bool) -> Bool {
        guard frames > 0 else { return true }
        switch phase {
        case .settling:
            if now >= settleDeadline || !holdBlock(data, frames: frames) {
                // Never settled within the hold (a jittery server, or no report at all): go with
                // the best guess, then place this block normally.
                let start = settlingFallbackStart(now: now, arrivingFrames: frames)
                if !releaseHeld(at: start, confidence: 2, now: now, emit: emit) { return false }
                return place(data, frames: frames, fresh: fresh, now: now, emit: emit)
            }
            if let fresh { return settle(with: fresh, positionOfReport: position - frames, now: now, emit: emit) }
            return true
        case .suspect:
            if let fresh {
                // The report belongs to this block's first frame: judge before holding it.
                if !judgeSuspect(fresh, now: now, emit: emit) { return false }
                if phase != .suspect { return place(data, frames: frames, fresh: nil, now: now, emit: emit) }
            }
            if !holdBlock(data, frames: frames) {
                // Not confirmed within the hold: the old time line stands.
                if !releaseHeldOnClock(now: now, emit: emit) { return false }
                return place(data, frames: frames, fresh: nil, now: now, emit: emit)
            }
            return true
        case .running:
            let time: Int64
            if clock.isReset {
                // No settling asked for (after a hole): the first report starts the time line.
                guard let fresh else {
                    // Nothing to place it by yet: hold it like a settling stream.
                    phase = .settling
                    return place(data, frames: frames, fresh: nil, now: now, emit: emit)
                }
                _ = recentStarts.add(Double(fresh.captureTime) - Double(position) * Self.period, at: now)
                time = clock.update(measured: fresh.captureTime, frames: frames).time
            } else if let fresh {
                let error = Double(fresh.captureTime) - clock.predictedNext
                if abs(error) > resyncThreshold {
                    beginSuspect(fresh)
                    return place(data, frames: frames, fresh: nil, now: now, emit: emit)
                }
                let start = filteredStart(fresh, now: now)
                time = clock.update(measured: Int64(start + Double(position) * Self.period), frames: frames).time
            } else {
                time = clock.advance(frames: frames)
            }
            position += frames
            return deliver(data, frames: frames, time: time, now: now, emit: emit)
        }
    }

    private mutating func deliver(_ data: UnsafeRawPointer, frames: Int, time: Int64, now: Int64,
                                  emit: (Output) -> Bool) -> Bool {
        maxLatenessNs = max(maxLatenessNs, now - time)
        deliveredEnd = time + Int64(Double(frames) * clock.nanosecondsPerFrame)
        let samples = UnsafeBufferPointer(start: data.assumingMemoryBound(to: Float.self),
                                          count: frames * AudioFormat.channels)
        return emit(.audio(samples, frameCount: frames, captureTime: time))
    }

    @inline(__always)
    private mutating func isNew(_ m: Measurement) -> Bool {
        if m.report == lastReport { return false }
        lastReport = m.report
        return true
    }

    /// The median implied stream start over the last second, with this report in it.
    private mutating func filteredStart(_ m: Measurement, now: Int64) -> Double {
        recentStarts.add(Double(m.captureTime) - Double(position) * Self.period, at: now)
    }

    // MARK: - Settling

    /// `positionOfReport`: the stream position the report's capture time belongs to.
    private mutating func settle(with m: Measurement, positionOfReport: Int? = nil, now: Int64,
                                 emit: (Output) -> Bool) -> Bool {
        if settleDeadline == .max { settleDeadline = now + Self.settleTimeNs }
        guard let settled = settler.add(measured: m.captureTime, framesBefore: positionOfReport ?? position, at: now)
        else {
            if now >= settleDeadline {
                return releaseHeld(at: settlingFallbackStart(now: now, arrivingFrames: 0), confidence: 2, now: now, emit: emit)
            }
            return true
        }
        return releaseHeld(at: settled.start + Double(holdStart) * Self.period, confidence: settled.agreeing,
                           now: now, emit: emit)
    }

    /// Where the held audio starts when the reports never agreed: their best guess, or with no
    /// report at all, "the newest frame (of the block arriving now, if any) was captured now".
    private func settlingFallbackStart(now: Int64, arrivingFrames: Int) -> Double {
        if let start = settler.fallbackStart { return start + Double(holdStart) * Self.period }
        return Double(now) - Double(heldFrames + arrivingFrames) * Self.period
    }

    // MARK: - Suspect reports

    private mutating func beginSuspect(_ m: Measurement) {
        phase = .suspect
        suspectStart = Double(m.captureTime) - Double(position) * Self.period
        holdStart = position
        heldFrames = 0
    }

    /// A report while a suspect one awaits confirmation; `m` is the capture time of the frame at
    /// `position` (the end of what is held).
    private mutating func judgeSuspect(_ m: Measurement, now: Int64, emit: (Output) -> Bool) -> Bool {
        let predicted = clock.predictedNext + Double(heldFrames) * clock.nanosecondsPerFrame
        let implied = Double(m.captureTime) - Double(position) * Self.period
        if abs(Double(m.captureTime) - predicted) <= resyncThreshold {
            // The old time line holds: the suspect report was wrong.
            return releaseHeldOnClock(now: now, emit: emit)
        }
        if abs(implied - suspectStart) <= confirmTolerance {
            let start = (implied + suspectStart) / 2
            let heldStartTime = start + Double(holdStart) * Self.period
            let jump = Int64(heldStartTime - clock.predictedNext)
            if !emit(.jump(jump)) { return false }
            recentStarts.reset()
            _ = recentStarts.add(start, at: now)
            return releaseHeld(at: heldStartTime, confidence: 2, now: now, emit: emit)
        }
        // A third opinion: it becomes the suspect.
        suspectStart = implied
        return true
    }

    // MARK: - The hold

    /// Copies a block into the hold; false when it does not fit.
    private mutating func holdBlock(_ data: UnsafeRawPointer, frames: Int) -> Bool {
        if heldFrames + frames > holdFrames { return false }
        (hold + heldFrames * Self.bytesPerFrame).copyMemory(from: data, byteCount: frames * Self.bytesPerFrame)
        heldFrames += frames
        position += frames
        return true
    }

    /// Starts the clock at `start` (the time of the first held frame) and delivers the hold.
    private mutating func releaseHeld(at start: Double, confidence: Int, now: Int64, emit: (Output) -> Bool) -> Bool {
        clock.restart(at: start, confidence: confidence)
        if recentStarts.isEmpty { _ = recentStarts.add(start - Double(holdStart) * Self.period, at: now) }
        return releaseHeldOnClock(now: now, emit: emit)
    }

    /// Delivers the hold in AAC-sized pieces on the clock as it stands.
    private mutating func releaseHeldOnClock(now: Int64, emit: (Output) -> Bool) -> Bool {
        phase = .running
        let total = heldFrames
        heldFrames = 0
        holdStart = position
        var offset = 0
        while offset < total {
            let n = min(total - offset, AudioFormat.blockFrames)
            let time = clock.advance(frames: n)
            if !deliver(hold + offset * Self.bytesPerFrame, frames: n, time: time, now: now, emit: emit) { return false }
            offset += n
        }
        return true
    }
}
