public import CaptureCore
public import CaptureConcurrency
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Records one PulseAudio source as 48 kHz interleaved stereo Float32 and hands it to a sink on the
/// recorder's own thread (a `PulseLoopThread`, which reads in 50 ms batches while the stream runs).
///
/// - `start()` connects and opens the stream, throwing `.audioUnavailable` (no server, refused,
///   timeout) or `.invalidChannels` (no such device) before it returns.
/// - Default targets follow the server's default device; the move is reported as a discontinuity.
/// - If the server goes away the recorder reports a discontinuity ("server lost"), retries every
///   500 ms for `reconnectTimeout`, and resumes (new timestamps) or fails with `.audioUnavailable`
///   (`.invalidChannels` when the server came back without the named device).
/// - Timestamps: see `AudioCaptureSink.audioCapture(didCapture:frameCount:captureTime:)` and
///   `CaptureClock`.
///
/// Sendable: the only stored state is immutable (the engine reference); the engine documents how it
/// owns its mutable state.
public final class AudioRecorder: Sendable {
    public let target: AudioCaptureTarget
    public let streamName: String
    private let engine: RecorderEngine

    /// Live recorder engines (an engine can outlive its recorder briefly: a stop from inside a
    /// callback hands it to a helper thread).
    public static let liveInstances = LiveInstances("AudioRecorder")

    /// - Parameters:
    ///   - sink: receives the audio. Not retained (the sink usually owns its recorder): keep it alive
    ///     for as long as the recorder runs.
    ///   - streamName: the pulse stream (and client) name, shown by `pactl list source-outputs`.
    ///   - reconnectTimeout: how long to keep retrying after the server went away.
    ///   - server: a pulse server string ("unix:/path/native"); nil = libpulse's default (PULSE_SERVER,
    ///     then XDG_RUNTIME_DIR/pulse/native).
    ///   - startTimeout: how long `start()` waits for the server.
    public init(target: AudioCaptureTarget, streamName: String, sink: any AudioCaptureSink,
                reconnectTimeout: Duration = .seconds(10), server: String? = nil,
                startTimeout: Duration = .seconds(3))
    {
        self.target = target
        self.streamName = streamName
        self.engine = RecorderEngine(target: target, streamName: streamName, sink: sink, server: server,
                                     reconnectTimeout: reconnectTimeout, startTimeout: startTimeout)
    }

    deinit {
        stop()
    }

    /// Connects and starts the stream; throws `.audioUnavailable` (no server) / `.invalidChannels`
    /// (no such device) synchronously, before returning. Audio may reach the sink before it returns.
    /// Can be called again after `stop()`.
    public func start() throws(CaptureError) {
        if engine.isOnMainloopThread {
            throw CaptureError(.internalError, "AudioRecorder.start() called from inside its own callback")
        }
        try engine.lifecycle.withLock { _ throws(CaptureError) in
            try engine.start()
        }
    }

    /// Stops and disconnects; after it returns no more callbacks come. Idempotent. May be called
    /// from inside a sink callback (the mainloop thread is then shut down by a helper thread).
    public func stop() {
        let engine = self.engine
        if engine.isOnMainloopThread {
            // We are inside a callback, holding the mainloop lock: tear down now so nothing more
            // reaches the sink, and let another thread join and free the mainloop (a thread cannot
            // join itself). The helper holds the engine strongly, so it outlives the mainloop.
            engine.stopFromMainloopThread()
            let generation = engine.generation
            DetachedThread.start {
                engine.lifecycle.withLock { _ in engine.shutdown(generation: generation) }
            }
            return
        }
        engine.lifecycle.withLock { _ in
            engine.shutdown(generation: engine.generation)
        }
    }

    /// Waits until the server has started delivering audio (the sink may not have it yet: a new
    /// stream's first audio is held until its timing settles), at most until `deadline`
    /// (CLOCK_MONOTONIC ns). False when it timed out.
    public func waitUntilStreaming(deadline: Int64) -> Bool {
        engine.firstDelivery.wait(deadlineNs: deadline) { engine.hasDelivered.load(ordering: .acquiring) }
    }

    /// Waits until the sink has been given the audio captured up to `endTime` (CLOCK_MONOTONIC
    /// ns), as long as the source's delivery delay makes necessary (a source that sends bursts
    /// delivers the last moments up to a burst later), at most `maxWait` past `endTime`; then
    /// anything still held back goes to the sink. Call it before `stop()` so a stop loses nothing
    /// the server still holds. Returns how long it waited. Not from inside a sink callback.
    @discardableResult
    public func finish(capturedUntil endTime: Int64, maxWait: Duration = .seconds(5)) -> Duration {
        if engine.isOnMainloopThread { return .zero }
        let waited = engine.lifecycle.withLock { _ in
            engine.finish(capturedUntil: endTime, maxWaitNs: maxWait.nanoseconds)
        }
        return .nanoseconds(waited)
    }

    /// The pulse source currently recorded (nil before start, while reconnecting, after stop).
    public var deviceName: String? {
        engine.publishedDevice.withLock { $0 }
    }

    /// How many times the recorder's PulseAudio loop has polled so far (0 when not running); for
    /// tests of its read batching.
    var loopIterations: UInt64 { engine.loopCounters.iterations }

    /// How many of those polls slept (the thread's wake-ups); for tests of its read batching.
    var loopSleeps: UInt64 { engine.loopCounters.sleeps }
}
