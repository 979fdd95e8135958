import CaptureCore
import CaptureConcurrency
import CPulse
#if canImport(Glibc)
import Glibc
import Synchronization
#endif

/// Staying up: reconnecting after the server went away, and following the server's default
/// device (moving the stream when it changes). Mainloop thread, lock held.
extension RecorderEngine {
    // MARK: Recovery

    func enterRecovery(reason: String, problem: CaptureError) {
        phase = .recovering
        deadline = MonotonicClock.now() + reconnectTimeoutNs
        lastProblem = problem
        attemptInFlight = false
        currentDevice = nil
        updateGate()
        publish(nil)
        discontinue(reason, settle: true)
        guard phase == .recovering else { return }   // the sink stopped us
        armTimer(afterMicroseconds: retryIntervalUs)
    }

    func tick() {
        let now = MonotonicClock.now()
        switch phase {
        case .starting:
            if now >= deadline, startOutcome == nil {
                let error = lastProblem ?? CaptureError(.audioUnavailable,
                    "the audio server (\(Pulse.describeServer(server))) did not answer within "
                    + "\(startTimeoutNs / 1_000_000) ms; is it hung?")
                attemptFailed(error, contextDead: true)
            } else if startOutcome == nil {
                armTimer(afterMicroseconds: UInt64(max(deadline - now, 1000) / 1000))
            }
        case .recovering:
            if now >= deadline {
                let seconds = Double(reconnectTimeoutNs / 1_000_000) / 1000
                let last = lastProblem ?? CaptureError(.audioUnavailable, "no answer")
                fail(CaptureError(last.code, "gave up recording \(target) after retrying for \(seconds) s: \(last.message)"))
                return
            }
            if attemptInFlight && now - attemptStartedAt > attemptTimeoutNs {
                // Hung attempt: start over with a fresh connection.
                attemptInFlight = false
                teardownStream()
                teardownContext()
            }
            if !attemptInFlight { beginAttempt() }
            if phase == .recovering { armTimer(afterMicroseconds: retryIntervalUs) }
        case .running:
            if refreshNeeded {
                refreshNeeded = false
                refreshExpected()
            }
        case .idle, .failed, .stopped:
            break
        }
    }

    func fail(_ error: CaptureError) {
        teardownAll()
        phase = .failed
        publish(nil)
        sink?.audioCapture(didFail: error)
    }
    // MARK: Following the default device

    func serverEvent(_ c: OpaquePointer, _ type: UInt32) {
        guard c == context, phase == .running else { return }
        let facility = type & PA_SUBSCRIPTION_EVENT_FACILITY_MASK.rawValue
        let kind = type & PA_SUBSCRIPTION_EVENT_TYPE_MASK.rawValue
        // SERVER change = default sink/source changed; sinks or sources appearing or going away can
        // change what the default resolves to. Plain property changes (volume) are ignored.
        if facility == PA_SUBSCRIPTION_EVENT_SERVER.rawValue || kind != PA_SUBSCRIPTION_EVENT_CHANGE.rawValue {
            refreshExpected()
        }
    }

    func refreshExpected() {
        guard let c = context, contextReady, phase == .running else { return }
        let op = pa_context_get_server_info(c, { c, info, userdata in
            guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
            engine.refreshedServerInfo(info)
        }, userdata)
        if let op { pa_operation_unref(op) }
    }

    func refreshedServerInfo(_ info: UnsafePointer<pa_server_info>?) {
        guard phase == .running, let info, let c = context else { return }
        switch target {
        case .defaultMicrophone:
            if let source = Pulse.string(info.pointee.default_source_name) { setExpected(source) }
        case .defaultSystemAudio:
            guard let sinkName = Pulse.string(info.pointee.default_sink_name) else { return }
            let op = pa_context_get_sink_info_by_name(c, sinkName, { c, info, eol, userdata in
                guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
                if eol == 0, let info, let monitor = Pulse.string(info.pointee.monitor_source_name) {
                    engine.setExpected(monitor)
                } else if eol < 0 {
                    engine.scheduleRefresh()   // the sink vanished meanwhile; look again shortly
                }
            }, userdata)
            if let op { pa_operation_unref(op) }
        default:
            break
        }
    }

    func scheduleRefresh() {
        refreshNeeded = true
        armTimer(afterMicroseconds: retryIntervalUs)
    }

    func setExpected(_ device: String) {
        guard phase == .running else { return }
        if device != expectedDevice {
            expectedDevice = device
            updateGate()
        }
        reconcile()
    }

    /// Moves the stream to the expected device if it is elsewhere.
    func reconcile() {
        guard phase == .running, let c = context, let s = stream, let expected = expectedDevice,
              pa_stream_get_state(s) == PA_STREAM_READY,
              currentDevice != expected, pendingMove != expected else { return }
        pendingMove = expected
        let op = pa_context_move_source_output_by_name(c, pa_stream_get_index(s), expected, { c, success, userdata in
            guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
            if success == 0 {
                engine.pendingMove = nil
                engine.scheduleRefresh()
            }
        }, userdata)
        if let op { pa_operation_unref(op) } else {
            pendingMove = nil
            scheduleRefresh()
        }
    }

    func streamMoved(_ s: OpaquePointer) {
        currentDevice = Pulse.string(pa_stream_get_device_name(s))
        if pendingMove == currentDevice { pendingMove = nil }
        publish(currentDevice)
        updateGate()
        discontinue("moved to \(currentDevice ?? "?")", settle: true)
        guard phase == .running else { return }
        reconcile()
    }

    func streamSuspended(_ s: OpaquePointer) {
        if pa_stream_is_suspended(s) == 1 {
            discontinue("source \(currentDevice ?? "?") suspended", settle: true)
        }
    }

    func updateGate() {
        gateOpen = currentDevice != nil && currentDevice == expectedDevice
    }

    func publish(_ device: String?) {
        publishedDevice.withLock { $0 = device }
    }
}
