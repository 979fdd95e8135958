import CaptureCore
import CaptureConcurrency
import CPulse
#if canImport(Glibc)
import Glibc
#endif

/// Connecting: the context, resolving the target to a device, opening the record stream, and
/// what the stream's state changes mean. Everything here runs on the mainloop thread with its
/// lock held (libpulse callbacks) or from `start()` under that lock.
extension RecorderEngine {

    func beginAttempt() {
        attemptInFlight = true
        attemptStartedAt = MonotonicClock.now()
        if context != nil && contextReady {
            resolveDevice()
            return
        }
        teardownStream()
        teardownContext()
        guard let api, let ctx = pa_context_new(api, streamName) else {
            attemptFailed(CaptureError(.internalError, "pa_context_new failed (out of memory?)"), contextDead: true)
            return
        }
        context = ctx
        contextReady = false
        pa_context_set_state_callback(ctx, { c, userdata in
            guard let engine = RecorderEngine.from(userdata), let c else { return }
            engine.contextStateChanged(c)
        }, userdata)
        // pa_context_connect can fail synchronously and run our state callback, which tears the
        // context down: hold a reference of our own across the call.
        pa_context_ref(ctx)
        defer { pa_context_unref(ctx) }
        if pa_context_connect(ctx, server, PA_CONTEXT_NOAUTOSPAWN, nil) < 0, context == ctx {
            attemptFailed(unavailable(detail: Pulse.errorText(context: ctx)), contextDead: true)
        }
    }

    func unavailable(detail: String) -> CaptureError {
        CaptureError(.audioUnavailable,
            "cannot connect to the audio server (\(Pulse.describeServer(server))): \(detail); "
            + "start PulseAudio/PipeWire or set PULSE_SERVER / XDG_RUNTIME_DIR")
    }

    func contextStateChanged(_ c: OpaquePointer) {
        guard c == context else { return }
        switch pa_context_get_state(c) {
        case PA_CONTEXT_READY:
            contextReady = true
            if target.followsDefault {
                pa_context_set_subscribe_callback(c, { c, type, _, userdata in
                    guard let engine = RecorderEngine.from(userdata), let c else { return }
                    engine.serverEvent(c, type.rawValue)
                }, userdata)
                let mask = PA_SUBSCRIPTION_MASK_SERVER.rawValue | PA_SUBSCRIPTION_MASK_SINK.rawValue
                    | PA_SUBSCRIPTION_MASK_SOURCE.rawValue
                if let op = pa_context_subscribe(c, pa_subscription_mask_t(rawValue: mask), nil, nil) {
                    pa_operation_unref(op)
                }
            }
            if attemptInFlight { resolveDevice() }
        case PA_CONTEXT_FAILED, PA_CONTEXT_TERMINATED:
            contextReady = false
            let detail = Pulse.errorText(context: c)
            switch phase {
            case .starting, .recovering:
                attemptFailed(unavailable(detail: detail), contextDead: true)
            case .running:
                teardownStream()
                teardownContext()
                enterRecovery(reason: "server lost",
                    problem: CaptureError(.audioUnavailable,
                        "the audio server (\(Pulse.describeServer(server))) went away (\(detail)) and did not "
                        + "come back within \(reconnectTimeoutNs / 1_000_000) ms"))
            case .idle, .failed, .stopped:
                break
            }
        default:
            break
        }
    }

    /// Looks up the device for the target, then opens the stream on it.
    func resolveDevice() {
        guard let c = context else { return }
        let op: OpaquePointer?
        switch target {
        case .defaultMicrophone, .defaultSystemAudio:
            op = pa_context_get_server_info(c, { c, info, userdata in
                guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
                engine.resolvedServerInfo(info)
            }, userdata)
        case .microphone(let name):
            op = pa_context_get_source_info_by_name(c, name, { c, info, eol, userdata in
                guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
                engine.resolvedSource(info, eol: eol)
            }, userdata)
        case .systemAudio(let sinkName):
            op = pa_context_get_sink_info_by_name(c, sinkName, { c, info, eol, userdata in
                guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
                engine.resolvedSink(info, eol: eol)
            }, userdata)
        }
        if let op { pa_operation_unref(op) } else {
            attemptFailed(unavailable(detail: Pulse.errorText(context: c)), contextDead: false)
        }
    }

    func resolvedServerInfo(_ info: UnsafePointer<pa_server_info>?) {
        guard attemptInFlight else { return }
        guard let info else {
            attemptFailed(unavailable(detail: Pulse.errorText(context: context)), contextDead: false)
            return
        }
        if case .defaultMicrophone = target {
            guard let source = Pulse.string(info.pointee.default_source_name) else {
                attemptFailed(CaptureError(.invalidChannels,
                    "the audio server has no default source (no microphone); connect one or name a source"),
                    contextDead: false)
                return
            }
            openStream(on: source)
            return
        }
        guard let sinkName = Pulse.string(info.pointee.default_sink_name), let c = context else {
            attemptFailed(CaptureError(.invalidChannels,
                "the audio server has no default sink, so there is no system audio to record"), contextDead: false)
            return
        }
        let op = pa_context_get_sink_info_by_name(c, sinkName, { c, info, eol, userdata in
            guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
            engine.resolvedSink(info, eol: eol)
        }, userdata)
        if let op { pa_operation_unref(op) }
    }


    func resolvedSink(_ info: UnsafePointer<pa_sink_info>?, eol: Int32) {
        guard attemptInFlight else { return }
        if eol == 0, let info {
            resolvedName = Pulse.string(info.pointee.monitor_source_name)
            return
        }
        let monitor = resolvedName
        resolvedName = nil
        if eol > 0, let monitor {
            openStream(on: monitor)
            return
        }
        let what: String
        switch target {
        case .systemAudio(let sinkName): what = "there is no sink named '\(sinkName)'"
        default: what = "the default sink disappeared while connecting"
        }
        attemptFailed(CaptureError(.invalidChannels, "\(what) (or it has no monitor source); list the channels "
            + "to see the available system_audio devices"), contextDead: false)
    }

    func resolvedSource(_ info: UnsafePointer<pa_source_info>?, eol: Int32) {
        guard attemptInFlight else { return }
        if eol == 0, let info {
            if info.pointee.monitor_of_sink != cpulse_invalid_index() {
                let sinkName = Pulse.string(info.pointee.monitor_of_sink_name) ?? "?"
                resolvedName = nil
                attemptFailed(CaptureError(.invalidChannels,
                    "'\(Pulse.string(info.pointee.name) ?? "?")' is the monitor of sink '\(sinkName)', not a "
                    + "microphone; record it as system_audio:\(sinkName)"), contextDead: false)
                return
            }
            resolvedName = Pulse.string(info.pointee.name)
            return
        }
        let name = resolvedName
        resolvedName = nil
        if eol > 0, let name {
            openStream(on: name)
            return
        }
        if case .microphone(let wanted) = target {
            attemptFailed(CaptureError(.invalidChannels,
                "there is no audio source named '\(wanted)'; list the channels to see the microphones"),
                contextDead: false)
        }
    }

    func openStream(on device: String) {
        guard let c = context, attemptInFlight else { return }
        teardownStream()
        var spec = Pulse.sampleSpec
        var map = pa_channel_map()
        pa_channel_map_init_stereo(&map)
        guard let s = pa_stream_new(c, streamName, &spec, &map) else {
            attemptFailed(unavailable(detail: Pulse.errorText(context: c)), contextDead: false)
            return
        }
        stream = s
        expectedDevice = device
        pa_stream_set_state_callback(s, { s, userdata in
            guard let engine = RecorderEngine.from(userdata), let s, s == engine.stream else { return }
            engine.streamStateChanged(s)
        }, userdata)
        pa_stream_set_read_callback(s, { s, _, userdata in
            guard let engine = RecorderEngine.from(userdata), let s, s == engine.stream else { return }
            engine.drain(s)
        }, userdata)
        // Every timing report, also the automatic ones between blocks: a source that sends bursts
        // sends nothing else for seconds, and a settling time line needs the reports.
        pa_stream_set_latency_update_callback(s, { s, userdata in
            guard let engine = RecorderEngine.from(userdata), let s, s == engine.stream else { return }
            engine.timingReportArrived(s)
        }, userdata)
        pa_stream_set_moved_callback(s, { s, userdata in
            guard let engine = RecorderEngine.from(userdata), let s, s == engine.stream else { return }
            engine.streamMoved(s)
        }, userdata)
        pa_stream_set_suspended_callback(s, { s, userdata in
            guard let engine = RecorderEngine.from(userdata), let s, s == engine.stream else { return }
            engine.streamSuspended(s)
        }, userdata)
        // 20 ms fragments; everything else at the server's default.
        var attr = pa_buffer_attr(
            maxlength: UInt32.max, tlength: UInt32.max, prebuf: UInt32.max, minreq: UInt32.max,
            fragsize: UInt32(48_000 / 50 * Pulse.bytesPerFrame))
        // Named devices are pinned (DONT_MOVE: if one goes away the stream fails); default targets
        // may move, and we move them ourselves when the default changes.
        var raw = PA_STREAM_ADJUST_LATENCY.rawValue | PA_STREAM_INTERPOLATE_TIMING.rawValue
            | PA_STREAM_AUTO_TIMING_UPDATE.rawValue
        if !target.followsDefault { raw |= PA_STREAM_DONT_MOVE.rawValue }
        pa_stream_ref(s)
        defer { pa_stream_unref(s) }
        if pa_stream_connect_record(s, device, &attr, pa_stream_flags_t(rawValue: raw)) < 0, stream == s {
            attemptFailed(classifyStreamError(c, device: device), contextDead: false)
        }
    }

    func classifyStreamError(_ c: OpaquePointer, device: String) -> CaptureError {
        let code = pa_context_errno(c)
        if code == Int32(PA_ERR_NOENTITY.rawValue) || code == Int32(PA_ERR_KILLED.rawValue) {
            return CaptureError(.invalidChannels, "the audio source '\(device)' does not exist (any more): "
                + Pulse.errorText(code))
        }
        return unavailable(detail: "recording from '\(device)' failed: \(Pulse.errorText(code))")
    }

    func streamStateChanged(_ s: OpaquePointer) {
        switch pa_stream_get_state(s) {
        case PA_STREAM_READY:
            streamReady(s)
        case PA_STREAM_FAILED, PA_STREAM_TERMINATED:
            guard let c = context else { return }
            let device = currentDevice ?? expectedDevice ?? "?"
            let error = classifyStreamError(c, device: device)
            switch phase {
            case .starting, .recovering:
                attemptFailed(error, contextDead: false)
            case .running:
                teardownStream()
                if target.followsDefault {
                    enterRecovery(reason: "stream lost (\(Pulse.errorText(context: c)))", problem: error)
                } else {
                    fail(CaptureError(.invalidChannels,
                        "the audio source '\(device)' went away (device removed?): \(Pulse.errorText(context: c))"))
                }
            case .idle, .failed, .stopped:
                break
            }
        default:
            break
        }
    }

    func streamReady(_ s: OpaquePointer) {
        guard attemptInFlight else { return }
        attemptInFlight = false
        lastProblem = nil
        currentDevice = Pulse.string(pa_stream_get_device_name(s))
        publish(currentDevice)
        pendingMove = nil
        updateGate()
        restartTimeline(settle: true)
        disarmTimer()
        let wasStarting = phase == .starting
        phase = .running
        if wasStarting {
            startOutcome = .success
            mainloop?.signal()
        }
        // The default may have changed while we were connecting.
        if target.followsDefault { refreshExpected() }
    }

    func attemptFailed(_ error: CaptureError, contextDead: Bool) {
        attemptInFlight = false
        resolvedName = nil
        teardownStream()
        if contextDead { teardownContext() }
        switch phase {
        case .starting:
            if startOutcome == nil {
                startOutcome = .failure(error)
                mainloop?.signal()
            }
        case .recovering:
            // Keep the most telling problem: "no such device" beats "no server" once the server is back.
            lastProblem = error
        default:
            break
        }
    }
}
