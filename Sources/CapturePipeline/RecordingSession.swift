public import CaptureCore
public import CaptureConcurrency
import CaptureSystem
public import CaptureSpool
public import CaptureUplink
public import Dispatch
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
public import Logging
public import PulseCapture
public import PipeWireCapture
public import Synchronization
public import WaylandOutputs
public import X11Capture
public import MediaEncoding


/// One recording: every requested channel captured on one shared timeline
/// (zero = session start) into chunks in `options.outputDirectory`.
///
/// Lifecycle: `start()` resolves channels, opens every source and encoder
/// (failing fast with a stable error code), then starts all channels at one
/// instant. `stop()` closes the current chunk of every channel, waits until
/// they are on disk and returns the summary. If a source fails on its own
/// (X server gone, audio server gone for good, disk error), `failure` is set
/// and `waitForFailure` returns it; the caller then calls `stop()`.
public final class RecordingSession: Sendable {
    public let options: RecordingOptions
    private let logger: Logger
    private let state = Mutex<State>(State())
    private let cancellation = StartCancellation()
    private let failureSignal = DispatchSemaphore(value: 0)
    private let live = RecordingSession.liveInstances.token()

    public static let liveInstances = LiveInstances("RecordingSession")

    /// Every pipeline type that counts its live instances (sessions, channels, recorders, and
    /// the display backend's objects: X11 grabbers, or Wayland connections and screencast
    /// streams): each count is back where it was once a stopped session has been let go.
    public static func liveObjectCounters(displays backend: DisplayBackendChoice.Backend) -> [LiveInstances] {
        let common = [liveInstances, VideoChannel.liveInstances, AudioChannel.liveInstances, AudioRecorder.liveInstances]
        switch backend {
        case .x11: return common + [ScreenGrabber.liveInstances]
        case .wayland: return common + [WaylandConnection.liveInstances, PipeWireScreenStream.liveInstances]
        }
    }

    private struct State {
        var video: [VideoChannel] = []
        var audio: [AudioChannel] = []
        var spool: SpoolWriter?
        var t0: Int64 = 0
        var started = false
        var stopped = false
        var failure: CaptureError?
        var channels: [ChannelInfo] = []
        /// Where the timeline ends (ns), fixed when `stop()` is called.
        var endNs: Int64 = 0
    }

    private let onDisplayChange: @Sendable (DisplayChange) -> Void
    private let onConsent: @Sendable (ScreenConsentEvent) -> Void
    private let onChunk: (@Sendable (ChunkMetadata) -> Void)?

    /// - Parameter onDisplayChange: a display channel's monitor changed size or place, went off
    ///   or came back (called on its capture thread; must not block).
    /// - Parameter onConsent: a Wayland display channel's consent was asked for, restored,
    ///   given or refused (called on its screencast thread; must not block).
    /// - Parameter onChunk: a chunk is complete in the spool (called on the spool writer's
    ///   queue; must not block): what the uplink sends.
    public init(options: RecordingOptions, logger: Logger,
                onDisplayChange: @escaping @Sendable (DisplayChange) -> Void = { _ in },
                onConsent: @escaping @Sendable (ScreenConsentEvent) -> Void = { _ in },
                onChunk: (@Sendable (ChunkMetadata) -> Void)? = nil) {
        self.options = options
        self.logger = logger
        self.onDisplayChange = onDisplayChange
        self.onConsent = onConsent
        self.onChunk = onChunk
    }

    /// The channels being recorded (after `start()`).
    public var channels: [ChannelInfo] { state.withLock { $0.channels } }

    /// The session's zero on CLOCK_MONOTONIC (after `start()`).
    public var startTime: Int64? { state.withLock { $0.started ? $0.t0 : nil } }

    /// The first failure of a running session, if any.
    public var failure: CaptureError? { state.withLock { $0.failure } }

    public func start() throws(CaptureError) {
        try options.validate()
        let resolved = try ChannelCatalog.resolve(options.channels, displayName: options.displayName,
                                                  backend: options.displayBackendChoice)
        guard !resolved.isEmpty else {
            throw CaptureError(.invalidChannels, "no channel to record (no display and no audio device found)")
        }
        let wallAtStart = WallClock.now()
        let monoAtStart = MonotonicClock.now()
        let spool = try SpoolWriter(sessionId: options.sessionId, sessionDirectory: options.outputDirectory,
                                    sessionStartMonotonic: monoAtStart, sessionStartUnixNs: wallAtStart,
                                    onChunk: onChunk)
        let onFailure: @Sendable (CaptureError) -> Void = { [weak self] error in self?.reportFailure(error) }

        var video: [VideoChannel] = []
        var audio: [AudioChannel] = []
        do throws(CaptureError) {
            for channel in resolved {
                switch channel {
                case .display(let id, let monitor, _):
                    let v = VideoChannel(id: id, monitor: monitor, options: options, logger: logger, onFailure: onFailure,
                                         onDisplayChange: onDisplayChange, onConsent: onConsent, cancellation: cancellation)
                    try v.prepare(spool: spool)
                    video.append(v)
                case .audio(let id, let target, _):
                    let a = AudioChannel(id: id, target: target, options: options, logger: logger, onFailure: onFailure)
                    try a.prepare(spool: spool)
                    audio.append(a)
                }
            }
        } catch {
            for v in video { v.requestStop(); v.start(at: MonotonicClock.now()); v.waitUntilFinished() }
            for a in audio { a.stopAndWait(at: nil) }
            throw error
        }

        // Every audio channel delivers before the session's zero is set, so the recording starts
        // with sound where the source had sound (see `AudioChannel.waitUntilFlowing`).
        let flowDeadline = MonotonicClock.now() + Self.audioStartTimeout.nanoseconds
        for a in audio where !a.waitUntilFlowing(deadline: flowDeadline) {
            logger.warning("audio source delivers nothing yet; the channel starts with silence", metadata: [
                "channel": "\(a.id)", "waitedMs": "\(Self.audioStartTimeout.nanoseconds / 1_000_000)"])
        }

        // One instant for everyone: the session's zero. The spool's anchor
        // moves here so chunk wall-clock capture times are exact.
        let t0 = MonotonicClock.now()
        let wall0 = wallAtStart + (t0 - monoAtStart)
        spool.reanchor(monotonic: t0, unixNs: wall0)
        // At once: audio from t0 on is already arriving (the slow session file comes after).
        for a in audio { a.start(at: t0) }
        for v in video { v.start(at: t0) }
        state.withLock {
            $0.video = video
            $0.audio = audio
            $0.spool = spool
            $0.t0 = t0
            $0.started = true
            $0.channels = resolved.map(\.info)
        }
        try writeSessionFile(spool: spool, channels: resolved.map(\.info), t0Wall: wall0, summary: nil)
        logger.info("recording started", metadata: [
            "session": "\(options.sessionId)", "out": "\(options.outputDirectory)",
            "channels": "\(resolved.map { $0.id.description }.joined(separator: ","))",
        ])
    }

    /// Ends a `start()` in progress from another thread: a wait for the user in the desktop's
    /// screen-sharing dialog ends at once (the dialog is closed) and `start()` throws
    /// INVALID_STATE. No effect once the start is done.
    public func cancelStart() {
        cancellation.cancel()
    }

    /// How long a start waits for the audio sources to deliver.
    static let audioStartTimeout: Duration = .seconds(3)

    /// Blocks until a channel fails or `timeout` passes; returns the failure, if any.
    public func waitForFailure(timeout: DispatchTime) -> CaptureError? {
        if failureSignal.wait(timeout: timeout) == .success {
            failureSignal.signal()
            return failure
        }
        return nil
    }

    /// Ends the session now (or at `maxDurationNs`, if that came first): every channel ends at
    /// that instant of the timeline. Video takes no frame slot from it on; audio waits for what
    /// its source captured up to it (a source that delivers late or in bursts sends the last
    /// moments after the stop), and only what never arrives is filled with silence. Closes the
    /// last chunks, waits until they are on disk and returns what was recorded.
    @discardableResult
    public func stop() -> RecordingSummary {
        let now = MonotonicClock.now()
        let (video, audio, spool, t0, alreadyStopped, end) = state.withLock { s in
            let was = s.stopped
            if !was {
                s.stopped = true
                s.endNs = s.started ? min(max(0, now - s.t0), options.maxDurationNs ?? .max) : 0
            }
            return (s.video, s.audio, s.spool, s.t0, was, s.endNs)
        }
        if !alreadyStopped {
            let endTime = MediaTime(nanoseconds: end)
            for v in video { v.requestStop(at: endTime) }
            // Every audio channel's end is set before any waits for its source's last moments.
            for a in audio { a.endTimeline(at: endTime) }
            for a in audio { a.stopAndWait(at: endTime) }
            for v in video { v.waitUntilFinished() }
            do throws(CaptureError) {
                try spool?.flush()
            } catch {
                reportFailure(error)
            }
        }
        let summary = makeSummary(spool: spool, durationNs: end)
        if !alreadyStopped, let spool {
            do throws(CaptureError) {
                try writeSessionFile(spool: spool, channels: channels, t0Wall: spool.sessionStartUnixNs, summary: summary)
            } catch {
                logger.error("cannot write session summary", metadata: ["error": "\(error)"])
            }
            logger.info("recording stopped", metadata: ["session": "\(options.sessionId)"])
        }
        return summary
    }

    /// Pauses the channels whose track (`ChannelID.trackName`: screen, mic,
    /// system_audio) is in `tracks`, from now on the session timeline. Returns
    /// that instant (ns since the session's zero).
    @discardableResult
    public func pause(tracks: Set<String>) -> Int64 {
        setPaused(true, tracks: tracks)
    }

    /// Resumes the channels whose track is in `tracks`; returns the instant.
    @discardableResult
    public func resume(tracks: Set<String>) -> Int64 {
        setPaused(false, tracks: tracks)
    }

    private func setPaused(_ paused: Bool, tracks: Set<String>) -> Int64 {
        let t0 = state.withLock { $0.t0 }
        let at = max(0, MonotonicClock.now() - t0)
        for c in channelParts() where tracks.contains(c.stats.channel.trackName) {
            if paused { c.gate.pause(at: at) } else { c.gate.resume(at: at) }
        }
        return at
    }

    /// Tracks paused now.
    public var pausedTracks: Set<String> {
        Set(channelParts().filter(\.gate.isPaused).map(\.stats.channel.trackName))
    }

    /// Live counters of every channel (chunks and bytes as spooled so far).
    public func liveStats() -> [ChannelStatsSnapshot] {
        snapshots(channelParts(), spool: state.withLock { $0.spool }, withPause: true)
    }

    /// Every channel's counters and pause gate, video first.
    private func channelParts() -> [(stats: ChannelStats, gate: PauseGate)] {
        let (video, audio) = state.withLock { ($0.video, $0.audio) }
        return video.map { ($0.stats, $0.pauseGate) } + audio.map { ($0.stats, $0.pauseGate) }
    }

    /// Counters with the spooled chunks and bytes filled in (and the pause state, for live status).
    private func snapshots(_ parts: [(stats: ChannelStats, gate: PauseGate)], spool: SpoolWriter?,
                           withPause: Bool) -> [ChannelStatsSnapshot] {
        let outlets = spool?.outletsByChannel ?? [:]
        return parts.map { part in
            var snap = part.stats.snapshot
            if let outlet = outlets[part.stats.channel] {
                snap.chunks = outlet.chunks
                snap.bytes = outlet.bytes
                snap.largestChunkBytes = outlet.largestChunk
            }
            if withPause { snap.paused = part.gate.isPaused }
            return snap
        }
    }

    private func reportFailure(_ error: CaptureError) {
        let first = state.withLock { s in
            if s.failure == nil { s.failure = error; return true }
            return false
        }
        if first { failureSignal.signal() }
    }

    private func makeSummary(spool: SpoolWriter?, durationNs: Int64) -> RecordingSummary {
        let channels = snapshots(channelParts(), spool: spool, withPause: false)
        let failure = self.failure
        return RecordingSummary(sessionId: options.sessionId, outputDirectory: options.outputDirectory,
                                durationNs: durationNs, channels: channels,
                                error: failure?.message, errorCode: failure?.code.rawValue)
    }

    private func writeSessionFile(spool: SpoolWriter, channels: [ChannelInfo], t0Wall: Int64, summary: RecordingSummary?) throws(CaptureError) {
        struct SessionFile: Codable {
            var version = 1
            var sessionId: String
            var startedAt: String
            var startedAtUnixNs: Int64
            var chunkDurationNs: Int64
            var fps: Int
            var channels: [ChannelInfo]
            var summary: RecordingSummary?
        }
        let file = SessionFile(sessionId: options.sessionId, startedAt: WallClock.iso8601(nanoseconds: t0Wall),
                               startedAtUnixNs: t0Wall, chunkDurationNs: options.chunkDurationNs, fps: options.video.fps,
                               channels: channels, summary: summary)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        guard let data = try? encoder.encode(file) else {
            throw CaptureError(.internalError, "cannot encode session.json")
        }
        let dir = try AtomicDirectory(creating: spool.sessionDirectory)
        try dir.publish("session.json", string: String(decoding: data, as: UTF8.self))
        try dir.sync()
    }
}
