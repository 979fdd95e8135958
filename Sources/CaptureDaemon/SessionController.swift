public import CaptureControl
public import CaptureCore
import CaptureConcurrency
import CapturePipeline
import LinuxSupport
import CaptureSpool
import CaptureUplink
import Dispatch
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
public import Logging
import Synchronization
import WebSocketUplink
import MediaEncoding

/// The one capture session the daemon runs at a time, as a state machine:
///
///     idle -> starting -> active (tracks pause/resume) -> stopping -> stopped
///                  \            \--(a source fails)--> stopping -> failed
///                   \--(start fails)--> failed
///
/// A new session may start from idle, stopped or failed; a second start while
/// one is starting, active or stopping gets INVALID_STATE.
///
/// Threads: state lives in a Mutex and is read without waiting by `status()`
/// and every command check; the slow work (opening sources, closing chunks)
/// runs on the serial `operations` queue, one operation at a time; a monitor
/// timer on its own queue watches the running session (source failure,
/// stalled channels, audio interruptions, token expiry).
public final class SessionController: Sendable {
    /// The states the protocol reports (`state` in getStatus and the session results).
    public typealias State = SessionState

    struct ChannelWatch {
        var lastChunks = 0
        var lastProgress: Int64 = 0
        var stallReported = false
        var lastDiscontinuities = 0
        var lastEncoded = 0
        var lastRateSample: Int64 = 0
        var measuredFps: Double?
        /// Audio: interrupted (server gone, reconnecting) since this instant; 0: not interrupted.
        var interruptedSince: Int64 = 0
        var capturedAtInterruption = 0
    }

    struct Snapshot {
        var state: State = .idle
        var sessionId: String?
        var session: RecordingSession?
        var options: RecordingOptions?
        var startedAtUnixNs: Int64?
        var startMonotonic: Int64?
        var failure: CaptureError?
        var channels: [ChannelInfo] = []
        var primaryChannel: String?
        var token: String?
        /// The endpoint `token` was given for (`UplinkTarget.description`); nil: not known yet
        /// (it goes with the first session's endpoint).
        var tokenEndpoint: String?
        var tokenExpiresAtUnix: Int64?
        var tokenExpiredReported = false
        var apiUrl: String?
        var endpoint: String?
        var lastSummary: RecordingSummary?
        var watches: [String: ChannelWatch] = [:]
        /// Bytes in the spool from earlier sessions when this one started.
        var spoolBytesAtStart: Int64 = 0
        /// The session's chunks on their way to its uplink (nil: no endpoint, spool only).
        var relay: ChunkRelay?
        /// The session while its start runs (a stop cancels a wait in the consent dialog).
        var starting: RecordingSession?
    }

    let configuration: DaemonConfiguration
    let logger: Logger
    let events: EventBus
    let snapshot = Mutex(Snapshot())
    let operations = DispatchQueue(label: "capture-agent.session", qos: .userInitiated)
    let monitorQueue = DispatchQueue(label: "capture-agent.monitor", qos: .utility)
    private let monitor = Mutex<RepeatingTimer?>(nil)
    /// The uploads in progress, by session: the current session's and earlier ones still draining.
    let uploads = Mutex<[String: UploadEntry]>([:])
    /// An upload reported something (or finished): `drainUploads` looks again.
    let uploadsChanged = ConditionSignal()
    /// Where tokens wait for a restarted agent (`$XDG_RUNTIME_DIR`, never the disk).
    let tokenStore = UplinkTokenStore()
    /// One chunk per channel, as large as the largest of the last session: the room a new
    /// session needs in the spool before its first chunks are in (see `spool_budget`).
    let lastChunkRound = Atomic<Int64>(0)
    /// How often the monitor looks at the session.
    static let monitorIntervalMs = 250

    public init(configuration: DaemonConfiguration, logger: Logger, events: EventBus) {
        self.configuration = configuration
        self.logger = logger
        self.events = events
        let timer = RepeatingTimer(queue: monitorQueue, interval: .milliseconds(Self.monitorIntervalMs)) { [weak self] in
            self?.checkSession()
        }
        monitor.withLock { $0 = timer }
    }

    deinit { monitor.withLock { $0?.cancel() } }

    public var state: State { snapshot.withLock { $0.state } }

    // MARK: Commands

    /// `init`: remembers the API base URL the SDK names: the endpoint of later sessions
    /// that name none. One that cannot be an endpoint is refused and changes nothing.
    public func initialize(apiUrl: String?) throws(CaptureError) {
        if let apiUrl {
            do throws(CaptureError) { _ = try UplinkTarget(endpoint: apiUrl, allowInsecure: configuration.allowInsecureUplink) } catch {
                throw CaptureError(.invalidRequest, "init: params.apiUrl is not usable as the capture endpoint: \(error.message)")
            }
        }
        snapshot.withLock { $0.apiUrl = apiUrl }
    }

    /// `startRecording`. Replies once the session is active (or failed to start).
    public func start(_ params: StartRecordingParams, reply: @escaping @Sendable (Result<JSONValue, CaptureError>) -> Void) {
        let claimed: Result<(RecordingOptions, Snapshot), CaptureError> = snapshot.withLock { s in
            switch s.state {
            case .starting, .active, .stopping:
                return .failure(CaptureError(.invalidState,
                    "session \(s.sessionId ?? "?") is \(s.state.rawValue); stop it before starting another (one session at a time)"))
            case .idle, .stopped, .failed:
                break
            }
            let options: RecordingOptions
            do throws(CaptureError) {
                options = try makeOptions(params)
            } catch {
                return .failure(error)
            }
            let previous = s
            let endpoint = resolveEndpoint(params, apiUrl: s.apiUrl)
            if let endpoint {
                do throws(CaptureError) {
                    _ = try UplinkTarget(endpoint: endpoint, allowInsecure: configuration.allowInsecureUplink)
                } catch { return .failure(error) }
            }
            // A new token brings its own expiry; without one the old token and expiry stay.
            let expiry = if let token = params.uploadToken {
                Self.expiry(of: token, given: params.tokenExpiresAtUnixSeconds)
            } else {
                params.tokenExpiresAtUnixSeconds ?? s.tokenExpiresAtUnix
            }
            // A token goes only to the endpoint it was given for: a kept one does not follow a
            // session to another endpoint.
            let target = Self.target(endpoint)
            let keptToken = s.tokenEndpoint == nil || s.tokenEndpoint == target ? s.token : nil
            let token = params.uploadToken ?? keptToken
            s = Snapshot(state: .starting, sessionId: options.sessionId, options: options,
                         token: token, tokenEndpoint: token == nil ? nil : target, tokenExpiresAtUnix: expiry,
                         apiUrl: s.apiUrl, endpoint: endpoint)
            s.primaryChannel = params.channels.first(where: \.isPrimary)?.id.description
            s.relay = endpoint == nil ? nil : ChunkRelay()
            return .success((options, previous))
        }
        let options: RecordingOptions
        let previous: Snapshot
        switch claimed {
        case .failure(let error): reply(.failure(error)); return
        case .success(let (o, p)): options = o; previous = p
        }
        operations.async { [self] in
            let used = Self.spoolUsage()
            snapshot.withLock { $0.spoolBytesAtStart = used }
            let events = self.events
            let id = options.sessionId
            let relay = snapshot.withLock { $0.relay }
            var onChunk: (@Sendable (ChunkMetadata) -> Void)?
            if let relay { onChunk = { chunk in relay.deliver(chunk) } }
            let session = RecordingSession(options: options, logger: logger, onDisplayChange: { change in
                events.publish(Self.event(for: change, sessionId: id))
            }, onConsent: { consent in
                events.publish(Self.event(for: consent, sessionId: id))
            }, onChunk: onChunk)
            let stopRequested = snapshot.withLock { s -> Bool in
                s.starting = session
                return s.state == .stopping
            }
            if stopRequested { session.cancelStart() }
            defer { snapshot.withLock { $0.starting = nil } }
            do throws(CaptureError) {
                let room = lastChunkRound.load(ordering: .relaxed)
                if used + room >= configuration.spoolBudgetBytes {
                    throw CaptureError(.ioError,
                        "the spool (\(SpoolLocation.root)) holds \(used) bytes and the first chunks need about \(room) more, at or over spool_budget (\(configuration.spoolBudgetBytes) bytes); chunks are deleted only once the endpoint acknowledged them, so free space there or raise spool_budget")
                }
                try session.start()
            } catch {
                // A request naming channels that do not exist changes nothing
                // (the daemon is as it was before the request); a source that
                // cannot be opened is a failed start.
                let requestError = error.code == .invalidChannels || error.code == .invalidRequest
                snapshot.withLock { s in
                    if requestError {
                        s = previous
                    } else {
                        s.state = .failed
                        s.failure = error
                    }
                }
                logger.error("session failed to start", metadata: ["session": "\(options.sessionId)", "error": "\(error)"])
                events.publish(ControlEvent(.recordingFailed(.init(error, phase: .start)), sessionId: options.sessionId))
                reply(.failure(error))
                return
            }
            let now = MonotonicClock.now()
            let startedAt = WallClock.now() - (now - (session.startTime ?? now))
            let result: StartRecordingResult = snapshot.withLock { s in
                if s.state == .starting { s.state = .active }   // a stop may already be queued
                s.session = session
                s.startMonotonic = session.startTime
                s.startedAtUnixNs = startedAt
                s.channels = session.channels
                s.watches = Dictionary(uniqueKeysWithValues: session.channels.map {
                    ($0.id, ChannelWatch(lastProgress: now, lastRateSample: now))
                })
                return startResult(s)
            }
            let (endpoint, token, primary) = snapshot.withLock { ($0.endpoint, $0.token, $0.primaryChannel) }
            if let relay, let endpoint {
                startUpload(sessionId: id, endpoint: endpoint,
                            channels: UplinkChannel.channels(of: session.channels, chunkDurationNs: options.chunkDurationNs,
                                                            frameRate: options.video.fps, primary: primary),
                            token: token, relay: relay, directory: options.outputDirectory)
            }
            events.publish(ControlEvent(.recordingStarted(result), sessionId: options.sessionId, timestampUnixNs: startedAt))
            reply(.success(Self.encodedResult(result)))
        }
    }

    private func startResult(_ s: Snapshot) -> StartRecordingResult {
        StartRecordingResult(
            sessionId: s.sessionId ?? "", state: s.state,
            channels: s.channels.map { .init(channelId: $0.id, type: $0.type, name: $0.name, isPrimary: $0.id == s.primaryChannel) },
            outputDirectory: s.options?.outputDirectory ?? "",
            startedAt: WallClock.iso8601(nanoseconds: s.startedAtUnixNs ?? 0))
    }

    private func makeOptions(_ params: StartRecordingParams) throws(CaptureError) -> RecordingOptions {
        let id = params.sessionId ?? "cap-\(WallClock.iso8601(nanoseconds: WallClock.now()).replacing(":", with: "-"))"
        var ids = params.channels.map(\.id)
        if ids.isEmpty { ids = configuration.channels }
        var o = RecordingOptions(sessionId: id, outputDirectory: SpoolLocation.sessionDirectory(id), channels: ids)
        o.displayName = configuration.display
        o.displayBackend = configuration.displayBackend
        o.screenConsentTimeout = .nanoseconds(configuration.screenConsentTimeoutNs)
        o.chunkDurationNs = configuration.chunkNs
        o.video.fps = configuration.fps
        o.video.preset = configuration.preset
        o.video.maxHeight = configuration.maxHeight
        if let bitrate = configuration.videoBitrate {
            o.video.bitrate = bitrate
            o.video.crf = nil
        } else if let crf = configuration.crf {
            o.video.crf = crf
            o.video.rateControl = .constantRateFactor
        } else {
            o.video.crf = configuration.qp ?? 23
            o.video.rateControl = .constantQuantizer
        }
        o.audioBitrate = configuration.audioBitrate
        o.drawCursor = configuration.drawCursor
        o.audioReconnectTimeout = .nanoseconds(configuration.audioReconnectTimeoutNs)
        try o.validate()
        if FileManager.default.fileExists(atPath: o.outputDirectory) {
            throw CaptureError(.invalidRequest, "session \(id) already has a recording in \(o.outputDirectory); use a new session id")
        }
        return o
    }

    /// `stopRecording`. Replies with the summary once every chunk is in the spool.
    public func stop(sessionId: String?, reply: @escaping @Sendable (Result<JSONValue, CaptureError>) -> Void) {
        let (check, starting): (CaptureError?, RecordingSession?) = snapshot.withLock { s in
            guard s.state == .starting || s.state == .active else {
                if s.state == .stopping {
                    return (CaptureError(.invalidState, "session \(s.sessionId ?? "?") is already stopping"), nil)
                }
                return (CaptureError(.invalidState, "no session is recording (state: \(s.state.rawValue))"), nil)
            }
            if let sessionId, sessionId != s.sessionId {
                return (CaptureError(.invalidState, "no session \(sessionId); the current session is \(s.sessionId ?? "?")"), nil)
            }
            s.state = .stopping
            return (nil, s.starting)
        }
        if let check { reply(.failure(check)); return }
        // A start still waiting for the user in the screen-sharing dialog ends now.
        starting?.cancelStart()
        operations.async { [self] in
            // Runs after a start in progress finished: it may have failed.
            guard snapshot.withLock({ $0.session != nil && $0.state == .stopping }) else {
                reply(.failure(CaptureError(.invalidState, "the session failed to start; there is nothing to stop")))
                return
            }
            let result = finishSession(failure: nil)
            reply(.success(result))
        }
    }

    /// Closes the session's chunks, lets go of it and publishes what happened. Runs on
    /// `operations`.
    func finishSession(failure: CaptureError?) -> JSONValue {
        Self.encodedResult(finishSessionTyped(failure: failure))
    }

    private func finishSessionTyped(failure: CaptureError?) -> StopRecordingResult? {
        dispatchPrecondition(condition: .onQueue(operations))
        guard let (summary, failure, id) = closeSession(failure: failure) else { return nil }
        // The session, its channels and every buffer they held are gone now (RecordingSession
        // has no other owner): hand the freed pages back, so a daemon that runs a session per
        // meeting all day stays the size it was after the first.
        ProcessMemoryControl.releaseFreeHeap()
        if let failure {
            logger.error("session failed", metadata: ["session": "\(id ?? "?")", "error": "\(failure)"])
            events.publish(ControlEvent(.recordingFailed(.init(failure, phase: .recording, summary: summary)), sessionId: id))
        } else {
            logger.info("session stopped", metadata: ["session": "\(id ?? "?")"])
        }
        events.publish(ControlEvent(.recordingStopped(.init(summary: summary)), sessionId: id))
        // With an uplink, recording-complete waits for the endpoint's last ack (`uploadComplete`).
        if let id, finishUpload(sessionId: id, directory: summary.outputDirectory) {
            return StopRecordingResult(sessionId: id, state: failure == nil ? .stopped : .failed, summary: summary)
        }
        // No endpoint: "delivered" means safely in the spool.
        let chunks = summary.channels.reduce(0) { $0 + $1.chunks }
        let bytes = summary.channels.reduce(0) { $0 + $1.bytes }
        events.publish(ControlEvent(.recordingComplete(.spool(chunks: chunks, bytes: bytes, outputDirectory: summary.outputDirectory)),
                                    sessionId: id))
        return StopRecordingResult(sessionId: id ?? "", state: failure == nil ? .stopped : .failed, summary: summary)
    }

    static func encodedResult(_ result: (some Encodable)?) -> JSONValue {
        guard let result else { return .object([:]) }
        return (try? JSONValue(encoding: result)) ?? .null
    }

    /// `display-changed`: a display channel's monitor changed, went off or came back.
    static func event(for change: DisplayChange, sessionId: String) -> ControlEvent {
        // A switch, not the raw value: a kind the pipeline adds must be given its wire name here.
        let state: ControlEvent.DisplayChanged.State = switch change.kind {
        case .changed: .changed
        case .lost: .lost
        case .restored: .restored
        }
        let m = change.monitor, p = change.picture
        return ControlEvent(.displayChanged(.init(
            state: state,
            monitor: .init(name: m.name, x: m.x, y: m.y, width: m.width, height: m.height),
            output: .init(width: change.outputWidth, height: change.outputHeight),
            picture: .init(x: Int(p.x), y: Int(p.y), width: Int(p.width), height: Int(p.height)),
            atNs: change.atNs)), sessionId: sessionId, channel: change.channel.description)
    }

    /// `screen-consent`: a Wayland display's consent was asked for, restored, given or refused
    /// (in a session, or for `requestPermission` with no session).
    static func event(for consent: ScreenConsentEvent, sessionId: String?) -> ControlEvent {
        ControlEvent(.screenConsent(.init(state: consent.state, reason: consent.reason, monitor: consent.monitor,
                                          sharedMonitor: consent.sharedMonitor)),
                     sessionId: sessionId, channel: consent.channel?.description)
    }

    /// Stops the session and drops the controller's reference to it; nil when there is none.
    private func closeSession(failure: CaptureError?) -> (RecordingSummary, CaptureError?, String?)? {
        let (session, id) = snapshot.withLock { ($0.session, $0.sessionId) }
        guard let session else { return nil }
        let summary = session.stop()
        lastChunkRound.store(Int64(summary.channels.reduce(0) { $0 + $1.largestChunkBytes }), ordering: .relaxed)
        let failure = failure ?? session.failure
        snapshot.withLock { s in
            s.state = failure == nil ? .stopped : .failed
            s.failure = failure
            s.lastSummary = summary
            s.session = nil
        }
        return (summary, failure, id)
    }

    /// `pauseTracks` / `resumeTracks`.
    public func setPaused(_ paused: Bool, tracks: Set<Track>) throws(CaptureError) -> TracksResult {
        let (session, id, state) = snapshot.withLock { ($0.session, $0.sessionId, $0.state) }
        guard state == .active, let session else {
            throw CaptureError(.invalidState, "no active session to \(paused ? "pause" : "resume") (state: \(state.rawValue))")
        }
        let before = session.pausedTracks
        let present = Set(session.channels.compactMap { try? ChannelID(parsing: $0.id).trackName })
        let names = Set(tracks.map(\.rawValue)).intersection(present)
        let changing = paused ? names.subtracting(before) : names.intersection(before)
        let at = paused ? session.pause(tracks: changing) : session.resume(tracks: changing)
        // The session names tracks by ChannelID.trackName, which are Track's raw values.
        let now = session.pausedTracks.compactMap(Track.init(rawValue:)).sorted()
        let changed = changing.compactMap(Track.init(rawValue:)).sorted()
        if !changed.isEmpty {
            let change = ControlEvent.TracksChanged(tracks: changed, atNs: at, pausedTracks: now)
            events.publish(ControlEvent(paused ? .recordingPaused(change) : .recordingResumed(change), sessionId: id))
            logger.info(paused ? "tracks paused" : "tracks resumed", metadata: ["session": "\(id ?? "?")", "tracks": "\(changing.sorted())"])
        }
        return TracksResult(pausedTracks: now, atNs: at, changed: changed)
    }

    /// `updateToken`: replaces the upload token (kept in memory only, never logged).
    public func updateToken(_ params: UpdateTokenParams) -> UpdateTokenResult {
        let expiry = Self.expiry(of: params.token, given: params.expiresAtUnixSeconds)
        let target = tokenTarget(explicit: params.endpoint)
        snapshot.withLock { s in
            s.token = params.token
            s.tokenEndpoint = target
            s.tokenExpiresAtUnix = expiry
            s.tokenExpiredReported = false
        }
        let updated = updateUploadTokens(params.token, target: target)
        logger.info("upload token updated", metadata: [
            "expiresAt": "\(expiry.map { String($0) } ?? "unknown")", "endpoint": "\(target ?? "unknown")",
            "uploads": "\(updated.joined(separator: ","))"])
        return UpdateTokenResult(expiresAt: expiry, endpoint: target, uploads: updated)
    }

    /// The uplink URL an endpoint stands for, for comparing endpoints.
    static func target(_ endpoint: String?) -> String? {
        endpoint.flatMap { try? UplinkTarget(endpoint: $0, allowInsecure: true).description }
    }

    /// The endpoint a token from `updateToken` is for: the one named, else the current (or
    /// last) session's, else `init`'s apiUrl, else the setting; else, when every upload
    /// waiting in the daemon goes to one endpoint, that one. nil: unknown (it reaches none).
    func tokenTarget(explicit: String?) -> String? {
        if let explicit { return Self.target(explicit) }
        let known = snapshot.withLock { $0.endpoint ?? $0.apiUrl } ?? configuration.endpoint
        if let target = Self.target(known) { return target }
        let endpoints = Set(uploads.withLock { $0.values.map(\.endpoint) })
        return endpoints.count == 1 ? endpoints.first : nil
    }

    /// Stops a running session, if any, and waits for it (daemon shutdown).
    public func stopForShutdown() {
        let (running, starting) = snapshot.withLock { s -> (Bool, RecordingSession?) in
            guard s.state == .starting || s.state == .active else { return (false, nil) }
            s.state = .stopping
            return (true, s.starting)
        }
        starting?.cancelStart()
        if running {
            operations.sync { _ = finishSession(failure: nil) }
        } else {
            operations.sync {}   // let a stop in progress finish
        }
        // `stopRecording` answers once the chunks are closed, before the endpoint has the
        // last of them, and the SDK sends `shutdown` right after it: the uploads that are
        // moving get a while to finish. What is not acknowledged then stays in the spool;
        // the next start of the agent resumes it.
        drainUploads(timeoutNs: configuration.shutdownUploadWaitNs)
        stopUploads()
    }

    // MARK: Status

    /// `getStatus`: never waits for a start or stop in progress.
    public func status() -> StatusResult {
        let s = snapshot.withLock { $0 }
        let upload = uploadProgress(s.sessionId)
        var result = StatusResult(state: s.state, tokenPresent: s.token != nil,
                                  pausedTracks: s.session?.pausedTracks.compactMap(Track.init(rawValue:)).sorted() ?? [],
                                  earlierUploads: uploadSessions.filter { $0.key != s.sessionId })
        result.sessionId = s.sessionId
        result.startedAt = s.startedAtUnixNs.map { WallClock.iso8601(nanoseconds: $0) }
        if let t0 = s.startMonotonic, s.state == .active || s.state == .stopping {
            result.elapsedNs = MonotonicClock.now() - t0
        }
        result.failure = s.failure.map { StatusResult.Failure(code: $0.code.rawValue, message: $0.message) }
        result.outputDirectory = s.options?.outputDirectory
        result.endpoint = s.endpoint
        result.tokenExpiresAt = s.tokenExpiresAtUnix
        result.upload = upload

        let live: [ChannelStatsSnapshot]
        if let session = s.session, s.state == .active || s.state == .stopping {
            live = session.liveStats()
        } else {
            live = s.lastSummary?.channels ?? []
        }
        result.channels = live.map { stat in
            let watch = s.watches[stat.channel]
            var c = StatusResult.Channel(
                channelId: stat.channel, type: stat.type, name: s.channels.first { $0.id == stat.channel }?.name ?? stat.channel,
                frames: stat.encoded, captured: stat.captured, dropped: stat.dropped, chunksSpooled: stat.chunks,
                chunksUploaded: upload.map { $0.chunksUploadedByChannel[stat.channel] ?? 0 }, bytes: stat.bytes,
                uploadLagMs: upload?.uploadLagMs, paused: stat.paused ?? false, stalled: watch?.stallReported ?? false)
            if stat.type == .video {
                c.fps = configuration.fps
                c.measuredFps = watch?.measuredFps.map { ($0 * 10).rounded() / 10 }
                c.repeated = stat.repeated
                c.leftOut = stat.leftOut
                c.offlineFrames = stat.offlineFrames ?? 0
                c.layoutChanges = stat.layoutChanges ?? 0
            } else {
                c.silenceFilledMs = stat.silenceFilledMs
                c.lostMs = (stat.lostSamples ?? 0) * 1000 / 48_000
                c.interruptions = stat.discontinuities
            }
            return c
        }
        return result
    }

}
