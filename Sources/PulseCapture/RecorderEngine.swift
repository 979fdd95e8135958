import CaptureCore
import CPulse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The state machine behind one `AudioRecorder`: a `PulseLoopThread`, its pa_context and
/// pa_stream, following the default device, and reconnecting after the server went away.
///
/// Threads and ownership (why `@unchecked Sendable` is sound):
/// - The lifecycle fields (`mainloop`, `api`, `generation`) are written only by `start()` and
///   `shutdown(generation:)`, which are called with the `lifecycle` mutex held; the
///   mainloop thread reads them only while it exists, i.e. strictly between the write in
///   `start()` (before PulseLoopThread.start creates the thread) and the clear in
///   `shutdown` (after PulseLoopThread.stop joined it): thread creation and join order the
///   accesses.
/// - Every other mutable field is touched only with the loop's lock held: libpulse
///   runs every callback (context, stream, operations, timer) on the mainloop thread with that
///   (recursive) lock held, and `start()` / `shutdown` / `stopFromMainloopThread()` take it (or
///   already run under it) before touching state.
/// - `publishedDevice` is a Mutex and `mainloopThread` an Atomic: safe from any thread.
/// - The C callbacks get the engine through an unretained userdata pointer. The engine outlives
///   the mainloop: the recorder owns it strongly and frees the mainloop (joining its thread)
///   before it can go away; a stop from inside a callback hands the shutdown to a thread that
///   holds a strong reference. (`generation` is also read on the mainloop thread by such a stop:
///   it was written before that thread was created and is rewritten only after it was joined.)
final class RecorderEngine: @unchecked Sendable {
    enum Phase { case idle, starting, running, recovering, failed, stopped }
    enum StartOutcome { case success, failure(CaptureError) }

    // MARK: Configuration (immutable)
    let target: AudioCaptureTarget
    let streamName: String
    /// Not owned: the sink usually owns the recorder (an `AudioChannel` holds its `AudioRecorder`,
    /// which holds this engine), so a strong reference here was a cycle that kept every session's
    /// audio channels, their buffers and spool directory handles alive forever.
    weak let sink: (any AudioCaptureSink)?
    let server: String?
    let reconnectTimeoutNs: Int64
    let startTimeoutNs: Int64
    /// Retry period while reconnecting.
    let retryIntervalUs: UInt64 = 500_000
    /// An attempt (connect + resolve + stream ready) that takes longer than this is abandoned.
    let attemptTimeoutNs: Int64 = 3_000_000_000
    /// While streaming, the loop reads the server's blocks at most this often (see
    /// `PulseLoopThread`): 20 wake-ups per second instead of one per block.
    static let batchIntervalNs: Int64 = 50_000_000

    private let live = AudioRecorder.liveInstances.token()

    // MARK: Any thread
    let publishedDevice = Mutex<String?>(nil)
    /// pthread_t of the mainloop thread while it runs (0 = none).
    let mainloopThread = Atomic<UInt>(0)

    // MARK: Lifecycle (`lifecycle` held)
    /// Serialises start() and shutdown(): guards `mainloop`, `api` and `generation`.
    let lifecycle = Mutex<Void>(())
    private(set) var mainloop: PulseLoopThread?
    private var api: UnsafeMutablePointer<pa_mainloop_api>?
    private(set) var generation: UInt64 = 0

    // MARK: Mainloop state (mainloop lock held)
    private var phase: Phase = .idle
    private var startOutcome: StartOutcome?
    private var context: OpaquePointer?
    private var contextReady = false
    private var stream: OpaquePointer?
    private var timer: OpaquePointer?
    private var attemptInFlight = false
    private var attemptStartedAt: Int64 = 0
    private var deadline: Int64 = 0
    private var lastProblem: CaptureError?
    private var expectedDevice: String?
    private var currentDevice: String?
    private var pendingMove: String?
    private var gateOpen = false
    private var refreshNeeded = false
    private var discontinuityReported = false
    private var clock = CaptureClock(resyncThreshold: 15_000_000)
    /// Reassembly buffer for chunks that are not whole, aligned frames (rare; allocated once).
    private let staging: UnsafeMutableRawPointer
    private let stagingCapacity = 4_096 * Pulse.bytesPerFrame
    private var stagingBytes = 0
    /// While a new stream's time line settles, its audio waits here (allocated once, 500 ms).
    private var settling = false
    private var settler = TimelineSettler()
    private let hold: UnsafeMutableRawPointer
    private let holdCapacity = 24_000 * Pulse.bytesPerFrame
    private var heldBytes = 0
    /// Frames of the current time line so far (delivered or held).
    private var timelineFrames = 0
    /// Median of the recent implied stream starts (see `SlidingMedian`).
    private var recentStarts = SlidingMedian()
    /// When we last asked the server for fresh timing (see `drain`).
    private var lastTimingRequest: Int64 = 0
    /// A timing request is out (see `updateBatching`).
    private var timingReplyPending = false
    /// The loop iteration in which a due timing request was put off until the next block arrives.
    private var timingRequestArmedAt: UInt64?
    private let timingRequestIntervalNs: Int64 = 100_000_000
    /// Wall-clock stamp of the last timing info seen, and wall-minus-monotonic when it was seen.
    private var lastInfoStamp: Int64 = 0
    private var lastInfoWallOffset: Int64 = 0

    init(target: AudioCaptureTarget, streamName: String, sink: any AudioCaptureSink, server: String?,
         reconnectTimeout: Duration, startTimeout: Duration)
    {
        self.target = target
        self.streamName = streamName
        self.sink = sink
        self.server = server
        self.reconnectTimeoutNs = reconnectTimeout.nanoseconds
        self.startTimeoutNs = startTimeout.nanoseconds
        self.staging = .allocate(byteCount: stagingCapacity, alignment: 16)
        self.hold = .allocate(byteCount: holdCapacity, alignment: 16)
    }

    deinit {
        staging.deallocate()
        hold.deallocate()
    }


    private var userdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ userdata: UnsafeMutableRawPointer?) -> RecorderEngine? {
        guard let userdata else { return nil }
        return Unmanaged<RecorderEngine>.fromOpaque(userdata).takeUnretainedValue()
    }

    /// See AudioRecorder.loopIterations.
    var loopIterations: UInt64 {
        lifecycle.withLock { _ in
            guard let ml = mainloop else { return 0 }
            ml.lock()
            defer { ml.unlock() }
            return ml.iteration
        }
    }

    var isOnMainloopThread: Bool {
        let t = mainloopThread.load(ordering: .acquiring)
        return t != 0 && pthread_equal(pthread_t(t), pthread_self()) != 0
    }

    // MARK: - Lifecycle (called by AudioRecorder with its lifecycle mutex held)

    func start() throws(CaptureError) {
        if mainloop != nil {
            if phase == .stopped || phase == .failed || phase == .idle {
                // Leftover of a stop() from inside a callback, or of a failed recorder: finish it.
                shutdown(generation: generation)
            } else {
                throw CaptureError(.internalError, "AudioRecorder.start() called twice without stop()")
            }
        }
        guard let ml = PulseLoopThread(name: "pulse-capture", batchIntervalNs: Self.batchIntervalNs) else {
            throw CaptureError(.internalError, "pa_mainloop_new failed (out of memory?)")
        }
        mainloop = ml
        api = ml.api
        generation &+= 1
        guard let thread = ml.start() else {
            mainloop = nil
            api = nil
            throw CaptureError(.internalError, "cannot start the PulseAudio mainloop thread")
        }
        // Before any callback can run: they only follow what is set up below, under the lock.
        mainloopThread.store(UInt(thread), ordering: .releasing)
        ml.lock()
        phase = .starting
        startOutcome = nil
        lastProblem = nil
        expectedDevice = nil
        currentDevice = nil
        pendingMove = nil
        refreshNeeded = false
        discontinuityReported = false
        clock.reset(keepPeriod: false)
        restartTimeline(settle: true)
        deadline = MonotonicClock.now() + startTimeoutNs
        armTimer(afterMicroseconds: UInt64(startTimeoutNs / 1000))
        beginAttempt()
        while startOutcome == nil {
            ml.wait()
        }
        let outcome = startOutcome!
        startOutcome = nil
        if case .failure(let error) = outcome {
            teardownAll()
            phase = .idle
            ml.unlock()
            shutdown(generation: generation)
            throw error
        }
        ml.unlock()
    }

    /// Stops and frees the mainloop of `generation` (no-op if that one is already gone). After it
    /// returns no callback runs. Must not be called on the mainloop thread.
    func shutdown(generation: UInt64) {
        guard let ml = mainloop, generation == self.generation else { return }
        ml.readPending()   // the audio up to now, which batching may still hold back
        ml.lock()
        teardownAll()
        if phase != .idle { phase = .stopped }
        ml.unlock()
        ml.stop()
        mainloopThread.store(0, ordering: .releasing)
        mainloop = nil
        api = nil
        publish(nil)
    }

    /// `stop()` from inside a callback: the mainloop lock is held by this very thread. Tears down
    /// stream and context so nothing more reaches the sink; the caller then shuts the mainloop
    /// down from another thread.
    func stopFromMainloopThread() {
        teardownAll()
        phase = .stopped
        publish(nil)
    }

    // MARK: - Attempts: connect, resolve the device, open the stream

    private func beginAttempt() {
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

    private func unavailable(detail: String) -> CaptureError {
        CaptureError(.audioUnavailable,
            "cannot connect to the audio server (\(Pulse.describeServer(server))): \(detail); "
            + "start PulseAudio/PipeWire or set PULSE_SERVER / XDG_RUNTIME_DIR")
    }

    private func contextStateChanged(_ c: OpaquePointer) {
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
    private func resolveDevice() {
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

    private func resolvedServerInfo(_ info: UnsafePointer<pa_server_info>?) {
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

    private var resolvedName: String?

    private func resolvedSink(_ info: UnsafePointer<pa_sink_info>?, eol: Int32) {
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

    private func resolvedSource(_ info: UnsafePointer<pa_source_info>?, eol: Int32) {
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

    private func openStream(on device: String) {
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

    private func classifyStreamError(_ c: OpaquePointer, device: String) -> CaptureError {
        let code = pa_context_errno(c)
        if code == Int32(PA_ERR_NOENTITY.rawValue) || code == Int32(PA_ERR_KILLED.rawValue) {
            return CaptureError(.invalidChannels, "the audio source '\(device)' does not exist (any more): "
                + Pulse.errorText(code))
        }
        return unavailable(detail: "recording from '\(device)' failed: \(Pulse.errorText(code))")
    }

    private func streamStateChanged(_ s: OpaquePointer) {
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

    private func streamReady(_ s: OpaquePointer) {
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

    private func attemptFailed(_ error: CaptureError, contextDead: Bool) {
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

    // MARK: - Recovery

    private func enterRecovery(reason: String, problem: CaptureError) {
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

    private func tick() {
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

    private func fail(_ error: CaptureError) {
        teardownAll()
        phase = .failed
        publish(nil)
        sink?.audioCapture(didFail: error)
    }

    // MARK: - Following the default device

    private func serverEvent(_ c: OpaquePointer, _ type: UInt32) {
        guard c == context, phase == .running else { return }
        let facility = type & PA_SUBSCRIPTION_EVENT_FACILITY_MASK.rawValue
        let kind = type & PA_SUBSCRIPTION_EVENT_TYPE_MASK.rawValue
        // SERVER change = default sink/source changed; sinks or sources appearing or going away can
        // change what the default resolves to. Plain property changes (volume) are ignored.
        if facility == PA_SUBSCRIPTION_EVENT_SERVER.rawValue || kind != PA_SUBSCRIPTION_EVENT_CHANGE.rawValue {
            refreshExpected()
        }
    }

    private func refreshExpected() {
        guard let c = context, contextReady, phase == .running else { return }
        let op = pa_context_get_server_info(c, { c, info, userdata in
            guard let engine = RecorderEngine.from(userdata), let c, c == engine.context else { return }
            engine.refreshedServerInfo(info)
        }, userdata)
        if let op { pa_operation_unref(op) }
    }

    private func refreshedServerInfo(_ info: UnsafePointer<pa_server_info>?) {
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

    private func scheduleRefresh() {
        refreshNeeded = true
        armTimer(afterMicroseconds: retryIntervalUs)
    }

    private func setExpected(_ device: String) {
        guard phase == .running else { return }
        if device != expectedDevice {
            expectedDevice = device
            updateGate()
        }
        reconcile()
    }

    /// Moves the stream to the expected device if it is elsewhere.
    private func reconcile() {
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

    private func streamMoved(_ s: OpaquePointer) {
        currentDevice = Pulse.string(pa_stream_get_device_name(s))
        if pendingMove == currentDevice { pendingMove = nil }
        publish(currentDevice)
        updateGate()
        discontinue("moved to \(currentDevice ?? "?")", settle: true)
        guard phase == .running else { return }
        reconcile()
    }

    private func streamSuspended(_ s: OpaquePointer) {
        if pa_stream_is_suspended(s) == 1 {
            discontinue("source \(currentDevice ?? "?") suspended", settle: true)
        }
    }

    private func updateGate() {
        gateOpen = currentDevice != nil && currentDevice == expectedDevice
    }

    private func publish(_ device: String?) {
        publishedDevice.withLock { $0 = device }
    }

    // MARK: - Audio path (hot: no allocation, no extra lock)

    /// Reports a gap once (until audio flows again) and restarts the time line.
    private func discontinue(_ reason: @autoclosure () -> String, settle: Bool) {
        restartTimeline(settle: settle)
        reportGap(reason())
    }

    /// Forgets the time line (and any partial frame). With `settle`, audio is held back until the
    /// new stream's latency measurements agree (see `TimelineSettler`); audio already held from
    /// the previous time line is dropped (its gap is reported with this restart).
    private func restartTimeline(settle: Bool) {
        clock.reset()
        stagingBytes = 0
        heldBytes = 0
        timelineFrames = 0
        settler.reset()
        recentStarts.reset()
        settling = settle
    }

    private func reportGap(_ reason: @autoclosure () -> String) {
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
    private func updateBatching() {
        mainloop?.batching = phase == .running && !settling && !timingReplyPending && timingRequestArmedAt == nil
    }

    private func sendTimingRequest(_ s: OpaquePointer) {
        if let op = pa_stream_update_timing_info(s, { _, _, userdata in
            guard let engine = RecorderEngine.from(userdata) else { return }
            engine.timingReplyPending = false
            engine.updateBatching()
        }, userdata) {
            timingReplyPending = true
            pa_operation_unref(op)
        }
    }

    private func drain(_ s: OpaquePointer) {
        // libpulse's automatic timing updates thin out to one per 1.5 s. Ask for fresh timing every
        // 100 ms (FFmpeg asks on every read): each answer is an independent measurement for
        // measureCaptureTime / SlidingMedian, and a recent one is never far off.
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
            if nbytes == 0 { return }
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
            let measured = measureCaptureTime(s)
            deliver(data, bytes: nbytes, measured: measured, stream: s)
            if stream != s { return }   // the sink stopped us; the stream is gone
            pa_stream_drop(s)
        }
    }

    /// CLOCK_MONOTONIC time at which the first unread frame entered the source (for a monitor:
    /// when it is heard, i.e. plus the sink's latency, as libpulse counts it). nil = no usable
    /// measurement for this block.
    ///
    /// libpulse's own answer is `now - pa_stream_get_latency()` (counted from the read index, which
    /// pa_stream_drop has not advanced yet). With PA_STREAM_INTERPOLATE_TIMING that latency comes
    /// from libpulse's smoother, which wanders by 1-5 ms over a second or two (measured on this
    /// machine's null sinks, worse under CPU load). The same quantity computed from the last
    /// timing info (which we refresh every 100 ms) has no such wander:
    ///     capture = timestamp - source_usec + sink_usec + (read_index - write_index) / byte rate
    /// (`timestamp` is the server's wall-clock time of the info, moved onto CLOCK_MONOTONIC here),
    /// exactly what pa_stream_get_time/get_latency compute before smoothing. It is used whenever
    /// the info is valid; pa_stream_get_latency only before the first info arrives or when an index
    /// is corrupt. The occasional spikes of a few ms go to `SlidingMedian`.
    @inline(__always)
    private func measureCaptureTime(_ s: OpaquePointer) -> Int64? {
        let now = MonotonicClock.now()
        if let info = pa_stream_get_timing_info(s),
           info.pointee.read_index_corrupt == 0, info.pointee.write_index_corrupt == 0
        {
            let ti = info.pointee
            let stampWall = Int64(ti.timestamp.tv_sec) * 1_000_000_000 + Int64(ti.timestamp.tv_usec) * 1000
            let wallMinusMonotonic = WallClock.now() - now
            if stampWall != lastInfoStamp {
                lastInfoStamp = stampWall
                lastInfoWallOffset = wallMinusMonotonic
            } else if abs(wallMinusMonotonic - lastInfoWallOffset) > 1_000_000 {
                // The wall clock was stepped since this info was stamped: its time is unusable.
                return nil
            }
            let queued = Double(ti.read_index - ti.write_index) * 1e9
                / Double(AudioFormat.sampleRate * Pulse.bytesPerFrame)
            return stampWall - wallMinusMonotonic - Int64(ti.source_usec) * 1000 + Int64(ti.sink_usec) * 1000
                + Int64(queued)
        }
        var usec: pa_usec_t = 0
        var negative: Int32 = 0
        if pa_stream_get_latency(s, &usec, &negative) == 0 {
            return negative != 0 ? now + Int64(usec) * 1000 : now - Int64(usec) * 1000
        }
        // No timing information yet: assume the newest buffered frame was captured just now.
        let frames = pa_stream_readable_size(s) / Pulse.bytesPerFrame
        return now - Int64(Double(frames) * CaptureClock.nominalNanosecondsPerFrame)
    }

    @inline(__always)
    private func deliver(_ data: UnsafeRawPointer, bytes: Int, measured: Int64?, stream s: OpaquePointer) {
        if stagingBytes == 0 && bytes % Pulse.bytesPerFrame == 0 && Int(bitPattern: data) % 4 == 0 {
            emit(data, frames: bytes / Pulse.bytesPerFrame, measured: measured)
            return
        }
        // Rare: a partial frame or misaligned chunk. Reassemble whole frames in `staging`.
        var offset = 0
        var time = measured
        while offset < bytes {
            let n = min(stagingCapacity - stagingBytes, bytes - offset)
            (staging + stagingBytes).copyMemory(from: data + offset, byteCount: n)
            stagingBytes += n
            offset += n
            let whole = stagingBytes / Pulse.bytesPerFrame * Pulse.bytesPerFrame
            if whole > 0 {
                emit(UnsafeRawPointer(staging), frames: whole / Pulse.bytesPerFrame, measured: time)
                if stream != s { return }
                time = time.map { $0 + Int64(Double(whole / Pulse.bytesPerFrame) * clock.nanosecondsPerFrame) }
                let rest = stagingBytes - whole
                if rest > 0 { staging.copyMemory(from: staging + whole, byteCount: rest) }
                stagingBytes = rest
            }
        }
    }

    @inline(__always)
    private func emit(_ data: UnsafeRawPointer, frames: Int, measured: Int64?) {
        if settling {
            hold(data, frames: frames, measured: measured)
            return
        }
        let time: Int64
        var jump: Int64? = nil
        if let measured {
            // The median implied stream start over the last second, carried to this block.
            let offset = Double(timelineFrames) * CaptureClock.nominalNanosecondsPerFrame
            let start = recentStarts.add(Double(measured) - offset, at: MonotonicClock.now())
            (time, jump) = clock.update(measured: Int64(start + offset), frames: frames)
        } else if clock.isReset {
            (time, jump) = clock.update(measured: MonotonicClock.now(), frames: frames)
        } else {
            time = clock.advance(frames: frames)
        }
        timelineFrames += frames
        if let jump {
            // Audio went missing (or the time line slipped): the filter restarted at the measured
            // time; the caller must know about the gap.
            reportGap("timestamp jumped by \(jump / 1_000_000) ms")
            if phase != .running || !gateOpen { return }
        }
        let samples = UnsafeBufferPointer(start: data.assumingMemoryBound(to: Float.self),
                                          count: frames * AudioFormat.channels)
        sink?.audioCapture(didCapture: samples, frameCount: frames, captureTime: time)
        discontinuityReported = false
    }

    /// Holds a block while the time line settles; releases everything once it has.
    private func hold(_ data: UnsafeRawPointer, frames: Int, measured: Int64?) {
        let bytes = frames * Pulse.bytesPerFrame
        if heldBytes + bytes > holdCapacity {
            // Never settled within 500 ms (a jittery server): go with the best guess.
            let heldNs = Double(heldBytes / Pulse.bytesPerFrame) * CaptureClock.nominalNanosecondsPerFrame
            releaseHeld(start: settler.fallbackStart ?? Double(MonotonicClock.now()) - heldNs, confidence: 2)
            if phase == .running && gateOpen && !settling { emit(data, frames: frames, measured: measured) }
            return
        }
        (hold + heldBytes).copyMemory(from: data, byteCount: bytes)
        let framesBefore = heldBytes / Pulse.bytesPerFrame
        heldBytes += bytes
        timelineFrames += frames
        if let measured, let settled = settler.add(measured: measured, framesBefore: framesBefore) {
            releaseHeld(start: settled.start, confidence: settled.agreeing)
        }
    }

    private func releaseHeld(start: Double?, confidence: Int) {
        settling = false
        settler.reset()
        let total = heldBytes
        heldBytes = 0
        guard let start, total > 0 else { return }
        clock.restart(at: start, confidence: confidence)
        recentStarts.reset()
        _ = recentStarts.add(start, at: MonotonicClock.now())
        let piece = AudioFormat.blockFrames * Pulse.bytesPerFrame
        var offset = 0
        while offset < total {
            let n = min(total - offset, piece)
            let frames = n / Pulse.bytesPerFrame
            let time = clock.advance(frames: frames)
            let samples = UnsafeBufferPointer(start: (hold + offset).assumingMemoryBound(to: Float.self),
                                              count: frames * AudioFormat.channels)
            sink?.audioCapture(didCapture: samples, frameCount: frames, captureTime: time)
            discontinuityReported = false
            if phase != .running || settling { return }   // the sink stopped us
            offset += n
        }
    }

    // MARK: - Timer and teardown

    private func armTimer(afterMicroseconds us: UInt64) {
        guard let api else { return }
        var tv = Pulse.timeval(fromNow: us)
        if let timer {
            api.pointee.time_restart?(timer, &tv)
        } else {
            timer = api.pointee.time_new?(api, &tv, { _, _, _, userdata in
                RecorderEngine.from(userdata)?.tick()
            }, userdata)
        }
    }

    private func disarmTimer() {
        guard let api, let timer else { return }
        api.pointee.time_restart?(timer, nil)
    }

    private func teardownStream() {
        guard let s = stream else { return }
        stream = nil
        pa_stream_set_state_callback(s, nil, nil)
        pa_stream_set_read_callback(s, nil, nil)
        pa_stream_set_moved_callback(s, nil, nil)
        pa_stream_set_suspended_callback(s, nil, nil)
        if let c = context, pa_context_get_state(c) == PA_CONTEXT_READY {
            pa_stream_disconnect(s)
        }
        pa_stream_unref(s)
        stagingBytes = 0
        gateOpen = false
        timingReplyPending = false      // its operation goes with the stream
        timingRequestArmedAt = nil
        mainloop?.batching = false
    }

    private func teardownContext() {
        guard let c = context else { return }
        context = nil
        contextReady = false
        pa_context_set_state_callback(c, nil, nil)
        pa_context_set_subscribe_callback(c, nil, nil)
        pa_context_disconnect(c)
        pa_context_unref(c)
    }

    private func teardownAll() {
        teardownStream()
        teardownContext()
        if let api, let timer {
            api.pointee.time_free?(timer)
        }
        timer = nil
        attemptInFlight = false
        currentDevice = nil
        pendingMove = nil
        gateOpen = false
    }
}
