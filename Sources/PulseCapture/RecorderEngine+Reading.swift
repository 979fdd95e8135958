import CaptureCore
import CaptureConcurrency
import CPulse
#if canImport(Glibc)
import Glibc
import Synchronization
#endif

/// Reading the stream: libpulse's blocks and timing reports in, `StreamTimeline` placing them on
/// the clock, the sink's callbacks out. The hot path: no allocation, no lock beyond the
/// mainloop's, which every callback already holds.
extension RecorderEngine {
    /// Reports a gap once (until audio flows again) and restarts the time line.
    func discontinue(_ reason: @autoclosure () -> String, settle: Bool) {
        restartTimeline(settle: settle)
        reportGap(reason())
    }

    /// Forgets the time line (and any held audio or partial frame: its gap is reported with this
    /// restart). With `settle`, audio is held back until the new stream's timing reports agree.
    func restartTimeline(settle: Bool) {
        timeline.restart(settle: settle)
    }

    func reportGap(_ reason: @autoclosure () -> String) {
        if discontinuityReported { return }
        discontinuityReported = true
        sink?.audioCaptureDidDiscontinue(reason: reason())
    }

    /// Batch the reads once the stream runs; not while connecting or settling (every round trip
    /// and every block counts), nor while a timing reply is awaited: libpulse turns the server's
    /// read index into the client's by subtracting what the client holds when the reply is
    /// processed, so audio sent before the reply but read after it (as a batch could) would
    /// count twice and move that measurement late by up to a batch (measured: worst stray of a
    /// recording's capture times 2.6 -> 4.7 ms).
    func updateBatching() {
        mainloop?.batching = phase == .running && timeline.phase == .running && !timingReplyPending
            && timingRequestArmedAt == nil
    }

    func sendTimingRequest(_ s: OpaquePointer) {
        if let op = pa_stream_update_timing_info(s, { _, _, userdata in
            guard let engine = RecorderEngine.from(userdata) else { return }
            engine.timingReplyPending = false
            engine.updateBatching()
        }, userdata) {
            timingReplyPending = true
            pa_operation_unref(op)
        }
    }

    func drain(_ s: OpaquePointer) {
        // libpulse's automatic timing updates thin out to one per 1.5 s. Ask for fresh timing every
        // 100 ms (FFmpeg asks on every read): each answer is an independent measurement for
        // StreamTimeline, and a recent one is never far off.
        let now = MonotonicClock.now()
        if now - lastTimingRequest >= timingRequestIntervalNs && !timingReplyPending, let loop = mainloop {
            if loop.batching && timingRequestArmedAt == nil {
                // This batch was read late. The server stamps its answer with the time it
                // answers, and its write index moves only when the device delivers a block
                // (every 10 ms on the rig): an answer at a random moment between two blocks
                // is off by up to a block (measured: the recording's capture times strayed up
                // to 5.4 ms instead of 1.7). Ask right after the next block arrives instead,
                // as an unbatched reader does: stop batching until then.
                timingRequestArmedAt = loop.iteration
            } else if timingRequestArmedAt.map({ loop.iteration > $0 }) ?? true {
                timingRequestArmedAt = nil
                lastTimingRequest = now
                sendTimingRequest(s)
            }
        }
        updateBatching()
        while stream == s {
            var data: UnsafeRawPointer? = nil
            var nbytes = 0
            if pa_stream_peek(s, &data, &nbytes) < 0 { return }
            if nbytes == 0 { break }
            guard let data else {
                // A hole: the server skipped data. Drop it and report the gap.
                pa_stream_drop(s)
                discontinue("hole of \(nbytes / Pulse.bytesPerFrame) frames in the stream", settle: false)
                continue
            }
            if phase != .running || !gateOpen {
                pa_stream_drop(s)
                if phase == .running {
                    discontinue("default device changed to \(expectedDevice ?? "?")", settle: true)
                }
                continue
            }
            if !hasDelivered.load(ordering: .relaxed) {
                hasDelivered.store(true, ordering: .releasing)
                firstDelivery.changed()
            }
            let measured = measureCaptureTime(s)
            let more = timeline.push(data, bytes: nbytes, measurement: measured, now: MonotonicClock.now()) {
                hand($0, stream: s)
            }
            if !more || stream != s { return }   // the sink stopped us; the stream is gone
            pa_stream_drop(s)
        }
        if let target = finishTarget, (timeline.deliveredEnd ?? .min) >= target { mainloop?.signal() }
        updateBatching()
    }

    /// A timing report arrived (libpulse's latency-update callback), between blocks or with them.
    func timingReportArrived(_ s: OpaquePointer) {
        guard phase == .running, gateOpen, timeline.phase != .running, let measured = measureCaptureTime(s) else {
            return
        }
        _ = timeline.observe(measured, now: MonotonicClock.now()) { hand($0, stream: s) }
        if let target = finishTarget, (timeline.deliveredEnd ?? .min) >= target { mainloop?.signal() }
        updateBatching()
    }

    /// Delivers whatever the time line still holds (the stream ends or a finish gave up waiting).
    func flushTimeline(stream s: OpaquePointer) {
        guard gateOpen else { return }
        _ = timeline.flush(now: MonotonicClock.now()) { hand($0, stream: s) }
    }

    /// One output of the time line to the sink; false once the sink stopped us (or the device
    /// changed under us), so the time line emits nothing more.
    @inline(__always)
    private func hand(_ output: StreamTimeline.Output, stream s: OpaquePointer) -> Bool {
        switch output {
        case .audio(let samples, let frames, let time):
            sink?.audioCapture(didCapture: samples, frameCount: frames, captureTime: time)
            discontinuityReported = false
        case .jump(let jump):
            // Audio went missing upstream (or the time line slipped), confirmed by a second
            // report: the caller fills the gap.
            reportGap("timestamp jumped by \(jump / 1_000_000) ms")
        }
        return stream == s && phase == .running && gateOpen
    }

    /// The capture time of the first unread frame (for a monitor: when it is heard, i.e. plus the
    /// sink's latency, as libpulse counts it), from the last timing report; nil without a usable
    /// report.
    ///
    ///     capture = timestamp - source_usec + sink_usec + (read_index - write_index) / byte rate
    ///
    /// (`timestamp` is the server's wall-clock time of the report, moved onto CLOCK_MONOTONIC
    /// here): exactly what pa_stream_get_time/get_latency compute before libpulse's smoother,
    /// which wanders by 1-5 ms over a second or two (measured on this machine's null sinks, worse
    /// under load). Nothing else is a measurement: before the first report (a bursty source hands
    /// out seconds of audio before it arrives) "now" is not when the newest frame was captured,
    /// and libpulse's interpolated latency is off by the same amount. `StreamTimeline` holds the
    /// audio until reports come.
    @inline(__always)
    func measureCaptureTime(_ s: OpaquePointer) -> StreamTimeline.Measurement? {
        guard let info = pa_stream_get_timing_info(s),
              info.pointee.read_index_corrupt == 0, info.pointee.write_index_corrupt == 0 else { return nil }
        let now = MonotonicClock.now()
        let ti = info.pointee
        let stampWall = Int64(ti.timestamp.tv_sec) * 1_000_000_000 + Int64(ti.timestamp.tv_usec) * 1000
        if stampWall == 0 { return nil }
        let wallMinusMonotonic = WallClock.now() - now
        if stampWall != lastInfoStamp {
            lastInfoStamp = stampWall
            lastInfoWallOffset = wallMinusMonotonic
        } else if abs(wallMinusMonotonic - lastInfoWallOffset) > 1_000_000 {
            // The wall clock was stepped since this report was stamped: its time is unusable.
            return nil
        }
        let queued = Double(ti.read_index - ti.write_index) * 1e9
            / Double(AudioFormat.sampleRate * Pulse.bytesPerFrame)
        let capture = stampWall - lastInfoWallOffset - Int64(ti.source_usec) * 1000 + Int64(ti.sink_usec) * 1000
            + Int64(queued)
        return StreamTimeline.Measurement(captureTime: capture, report: stampWall)
    }
}
