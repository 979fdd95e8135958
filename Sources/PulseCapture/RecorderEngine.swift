import CaptureCore
import CaptureConcurrency
import CPulse
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The state machine behind one `AudioRecorder`: a `PulseLoopThread`, its pa_context and
/// pa_stream, following the default device, and reconnecting after the server went away.
///
/// The engine is split by concern: this file has its state, the lifecycle (start, finish,
/// shutdown) and teardown; `+Connection` connects, resolves the device and opens the stream;
/// `+Recovery` reconnects and follows the default device; `+Reading` reads the stream and feeds
/// `StreamTimeline`, the hot path that places audio on the clock.
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
///   (recursive) lock held, and `start()` / `finish` / `shutdown` / `stopFromMainloopThread()`
///   take it (or already run under it) before touching state. Debug builds check it
///   (`assertLocked`) where the hot path and the lifecycle meet.
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
    /// `PulseLoopThread`): 40 wake-ups per second instead of one per block. Every chunk
    /// waits for its last audio up to this long, on its way to the endpoint too; 25 ms
    /// keeps the capture-to-acknowledgement time of audio chunks near video's
    /// (scripts/benchmark-uplink) for about 2 ms of CPU a second per stream.
    static let batchIntervalNs: Int64 = 25_000_000
    /// How often to ask the server for fresh timing while streaming (see `drain`).
    let timingRequestIntervalNs: Int64 = 100_000_000

    private let live = AudioRecorder.liveInstances.token()

    // MARK: Any thread
    let publishedDevice = Mutex<String?>(nil)
    /// pthread_t of the mainloop thread while it runs (0 = none).
    let mainloopThread = Atomic<UInt>(0)
    /// The stream has delivered audio since the last start (held or handed on).
    let hasDelivered = Atomic<Bool>(false)
    /// Signalled when `hasDelivered` turns true (`AudioRecorder.waitUntilStreaming` waits on it).
    let firstDelivery = ConditionSignal()

    // MARK: Lifecycle (`lifecycle` held)
    /// Serialises start(), finish() and shutdown(): guards `mainloop`, `api` and `generation`.
    let lifecycle = Mutex<Void>(())
    private(set) var mainloop: PulseLoopThread?
    var api: UnsafeMutablePointer<pa_mainloop_api>?
    private(set) var generation: UInt64 = 0

    // MARK: Mainloop state (mainloop lock held)
    var phase: Phase = .idle
    var startOutcome: StartOutcome?
    var context: OpaquePointer?
    var contextReady = false
    var stream: OpaquePointer?
    var timer: OpaquePointer?
    var attemptInFlight = false
    var attemptStartedAt: Int64 = 0
    var deadline: Int64 = 0
    var lastProblem: CaptureError?
    var expectedDevice: String?
    var currentDevice: String?
    var pendingMove: String?
    /// A device name found while resolving, until the lookup's end-of-list callback.
    var resolvedName: String?
    var gateOpen = false
    var refreshNeeded = false
    var discontinuityReported = false
    /// Where the audio goes on the clock: staging, hold, settling, the loop filter.
    var timeline = StreamTimeline()
    /// A finish in progress waits for the sink to have audio up to this capture time.
    var finishTarget: Int64?
    /// When we last asked the server for fresh timing (see `drain`).
    var lastTimingRequest: Int64 = 0
    /// A timing request is out (see `updateBatching`).
    var timingReplyPending = false
    /// The loop iteration in which a due timing request was put off until the next block arrives.
    var timingRequestArmedAt: UInt64?
    /// Wall-clock stamp of the last timing info seen, and wall-minus-monotonic when it was seen.
    var lastInfoStamp: Int64 = 0
    var lastInfoWallOffset: Int64 = 0

    init(target: AudioCaptureTarget, streamName: String, sink: any AudioCaptureSink, server: String?,
         reconnectTimeout: Duration, startTimeout: Duration)
    {
        self.target = target
        self.streamName = streamName
        self.sink = sink
        self.server = server
        self.reconnectTimeoutNs = reconnectTimeout.nanoseconds
        self.startTimeoutNs = startTimeout.nanoseconds
    }

    var userdata: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ userdata: UnsafeMutableRawPointer?) -> RecorderEngine? {
        guard let userdata else { return nil }
        return Unmanaged<RecorderEngine>.fromOpaque(userdata).takeUnretainedValue()
    }

    /// See AudioRecorder.loopIterations and loopSleeps: the loop's counters (0 when not running).
    var loopCounters: (iterations: UInt64, sleeps: UInt64) {
        lifecycle.withLock { _ in
            guard let ml = mainloop else { return (0, 0) }
            ml.lock()
            defer { ml.unlock() }
            return (ml.iteration, ml.sleeps)
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
        finishTarget = nil
        hasDelivered.store(false, ordering: .relaxed)
        timeline.resetLateness()
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

    /// Waits until the sink has been given the audio captured up to `endTime` (CLOCK_MONOTONIC
    /// ns): a stop must not lose what the server still holds for the session's last moments. A
    /// smooth source delivers it within a block or two; one that sends bursts (module-sine-source:
    /// 2 s at a time; Bluetooth, RTP and tunnel sources alike) up to a burst later. So the wait is
    /// bounded by the largest delay seen so far between capture and delivery, plus `marginNs`, at
    /// most `maxWaitNs` past `endTime`; whatever is still held then (a time line settling, a
    /// suspect report) goes out with the best estimate. No wait while the stream is not running
    /// (reconnecting: that audio is not coming). Returns how long it waited (ns). Not on the
    /// mainloop thread; `lifecycle` held.
    @discardableResult
    func finish(capturedUntil endTime: Int64, marginNs: Int64 = 250_000_000, maxWaitNs: Int64 = 5_000_000_000) -> Int64 {
        guard let ml = mainloop else { return 0 }
        let began = MonotonicClock.now()
        ml.readPending()   // batching off: every block is read as it comes
        ml.lock()
        defer { ml.unlock() }
        let bound = min(timeline.maxLatenessNs + marginNs, maxWaitNs)
        let deadline = endTime + bound
        finishTarget = endTime
        while phase == .running, stream != nil, (timeline.deliveredEnd ?? .min) < endTime {
            let now = MonotonicClock.now()
            if now >= deadline { break }
            ml.wait(untilMonotonic: min(deadline, now + 50_000_000))
        }
        finishTarget = nil
        if phase == .running, let s = stream {
            flushTimeline(stream: s)
        }
        return MonotonicClock.now() - began
    }

    /// Stops and frees the mainloop of `generation` (no-op if that one is already gone). After it
    /// returns no callback runs. Must not be called on the mainloop thread.
    func shutdown(generation: UInt64) {
        guard let ml = mainloop, generation == self.generation else { return }
        ml.readPending()   // the audio up to now, which batching may still hold back
        ml.lock()
        if phase == .running, let s = stream { flushTimeline(stream: s) }
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

    // MARK: - Timer and teardown

    func armTimer(afterMicroseconds us: UInt64) {
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

    func disarmTimer() {
        guard let api, let timer else { return }
        api.pointee.time_restart?(timer, nil)
    }

    func teardownStream() {
        guard let s = stream else { return }
        stream = nil
        pa_stream_set_state_callback(s, nil, nil)
        pa_stream_set_read_callback(s, nil, nil)
        pa_stream_set_moved_callback(s, nil, nil)
        pa_stream_set_suspended_callback(s, nil, nil)
        pa_stream_set_latency_update_callback(s, nil, nil)
        if let c = context, pa_context_get_state(c) == PA_CONTEXT_READY {
            pa_stream_disconnect(s)
        }
        pa_stream_unref(s)
        gateOpen = false
        timingReplyPending = false      // its operation goes with the stream
        timingRequestArmedAt = nil
        mainloop?.batching = false
    }

    func teardownContext() {
        guard let c = context else { return }
        context = nil
        contextReady = false
        pa_context_set_state_callback(c, nil, nil)
        pa_context_set_subscribe_callback(c, nil, nil)
        pa_context_disconnect(c)
        pa_context_unref(c)
    }

    func teardownAll() {
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
