public import CaptureCore
public import CaptureUplink

/// Where the daemon's one session stands (`state` in getStatus, startRecording,
/// stopRecording and recording-started). The raw values are the wire names.
public enum SessionState: String, Sendable, Codable {
    case idle, starting, active, stopping, stopped, failed
}

/// The results of `init` / `ping` (`daemon` in getStatus): who answers.
public struct DaemonInfo: Codable, Sendable, Equatable {
    public var version: String
    public var `protocol`: Int
    public var pid: Int
    public var platform: String
    public var uptimeNs: Int64
    public var clients: Int
    public var requests: Int
    public var badRequests: Int
    /// `ping` only.
    public var pong: Bool?

    public init(version: String, protocol: Int, pid: Int, platform: String, uptimeNs: Int64, clients: Int,
                requests: Int, badRequests: Int, pong: Bool? = nil) {
        self.version = version
        self.protocol = `protocol`
        self.pid = pid
        self.platform = platform
        self.uptimeNs = uptimeNs
        self.clients = clients
        self.requests = requests
        self.badRequests = badRequests
        self.pong = pong
    }
}

/// The result of `startRecording` (and the data of `recording-started`).
public struct StartRecordingResult: Codable, Sendable, Equatable {
    public struct Channel: Codable, Sendable, Equatable {
        public var channelId: String
        public var type: MediaType
        public var name: String
        public var isPrimary: Bool

        public init(channelId: String, type: MediaType, name: String, isPrimary: Bool) {
            self.channelId = channelId
            self.type = type
            self.name = name
            self.isPrimary = isPrimary
        }

        enum CodingKeys: String, CodingKey {
            case channelId = "channel_id", type, name, isPrimary = "is_primary"
        }
    }

    public var sessionId: String
    /// `active`; `stopping` when a stop arrived while the session was starting.
    public var state: SessionState
    public var channels: [Channel]
    public var outputDirectory: String
    /// RFC 3339 with ms: the session timeline's zero.
    public var startedAt: String

    public init(sessionId: String, state: SessionState, channels: [Channel], outputDirectory: String, startedAt: String) {
        self.sessionId = sessionId
        self.state = state
        self.channels = channels
        self.outputDirectory = outputDirectory
        self.startedAt = startedAt
    }
}

/// The result of `getStatus`. Fields the protocol documents as `null` when unknown are
/// written as `null` (not left out), so clients can tell "none" from "not sent".
public struct StatusResult: Codable, Sendable, Equatable {
    public struct Failure: Codable, Sendable, Equatable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public struct Channel: Codable, Sendable, Equatable {
        public var channelId: String
        public var type: MediaType
        public var name: String
        public var frames: Int
        public var captured: Int
        public var dropped: Int
        public var chunksSpooled: Int
        /// nil (null): the session has no upload, or it is finished.
        public var chunksUploaded: Int?
        public var bytes: Int
        public var uploadLagMs: Int64?
        public var paused: Bool
        public var stalled: Bool
        // Video only.
        public var fps: Int?
        public var measuredFps: Double?
        public var repeated: Int?
        public var leftOut: Int?
        public var offlineFrames: Int?
        public var layoutChanges: Int?
        // Audio only.
        public var silenceFilledMs: Int?
        public var lostMs: Int?
        public var interruptions: Int?

        public init(channelId: String, type: MediaType, name: String, frames: Int, captured: Int, dropped: Int,
                    chunksSpooled: Int, chunksUploaded: Int?, bytes: Int, uploadLagMs: Int64?, paused: Bool, stalled: Bool) {
            self.channelId = channelId
            self.type = type
            self.name = name
            self.frames = frames
            self.captured = captured
            self.dropped = dropped
            self.chunksSpooled = chunksSpooled
            self.chunksUploaded = chunksUploaded
            self.bytes = bytes
            self.uploadLagMs = uploadLagMs
            self.paused = paused
            self.stalled = stalled
        }

        enum CodingKeys: String, CodingKey {
            case channelId = "channel_id", type, name, frames, captured, dropped, chunksSpooled, chunksUploaded, bytes
            case uploadLagMs, paused, stalled, fps, measuredFps, repeated, leftOut, offlineFrames, layoutChanges
            case silenceFilledMs, lostMs, interruptions
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(channelId, forKey: .channelId)
            try c.encode(type, forKey: .type)
            try c.encode(name, forKey: .name)
            try c.encode(frames, forKey: .frames)
            try c.encode(captured, forKey: .captured)
            try c.encode(dropped, forKey: .dropped)
            try c.encode(chunksSpooled, forKey: .chunksSpooled)
            try c.encode(chunksUploaded, forKey: .chunksUploaded)   // null when none
            try c.encode(bytes, forKey: .bytes)
            try c.encode(uploadLagMs, forKey: .uploadLagMs)         // null when none
            try c.encode(paused, forKey: .paused)
            try c.encode(stalled, forKey: .stalled)
            if type == .video {
                try c.encodeIfPresent(fps, forKey: .fps)
                try c.encode(measuredFps, forKey: .measuredFps)     // null until measured
                try c.encodeIfPresent(repeated, forKey: .repeated)
                try c.encodeIfPresent(leftOut, forKey: .leftOut)
                try c.encodeIfPresent(offlineFrames, forKey: .offlineFrames)
                try c.encodeIfPresent(layoutChanges, forKey: .layoutChanges)
            } else {
                try c.encodeIfPresent(silenceFilledMs, forKey: .silenceFilledMs)
                try c.encodeIfPresent(lostMs, forKey: .lostMs)
                try c.encodeIfPresent(interruptions, forKey: .interruptions)
            }
        }
    }

    public var state: SessionState
    public var sessionId: String?
    public var startedAt: String?
    public var elapsedNs: Int64?
    public var failure: Failure?
    public var outputDirectory: String?
    /// null until a session has started.
    public var endpoint: String?
    public var tokenPresent: Bool
    public var tokenExpiresAt: Int64?
    public var pausedTracks: [Track]
    public var channels: [Channel]
    /// null without an upload (no endpoint, or it is complete).
    public var upload: UploadProgress?
    public var earlierUploads: [String: UploadProgress]
    /// Which backend serves display channels, and why (added by the control service).
    public var displayBackend: DisplayBackendInfo?
    /// Added by the control service.
    public var daemon: DaemonInfo?

    public init(state: SessionState, tokenPresent: Bool, pausedTracks: [Track], channels: [Channel] = [],
                earlierUploads: [String: UploadProgress] = [:]) {
        self.state = state
        self.tokenPresent = tokenPresent
        self.pausedTracks = pausedTracks
        self.channels = channels
        self.earlierUploads = earlierUploads
    }

    enum CodingKeys: String, CodingKey {
        case state, sessionId, startedAt, elapsedNs, failure, outputDirectory, endpoint, tokenPresent, tokenExpiresAt
        case pausedTracks, channels, upload, earlierUploads, displayBackend, daemon
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(state, forKey: .state)
        try c.encodeIfPresent(sessionId, forKey: .sessionId)
        try c.encodeIfPresent(startedAt, forKey: .startedAt)
        try c.encodeIfPresent(elapsedNs, forKey: .elapsedNs)
        try c.encodeIfPresent(failure, forKey: .failure)
        try c.encodeIfPresent(outputDirectory, forKey: .outputDirectory)
        try c.encode(endpoint, forKey: .endpoint)   // null when none
        try c.encode(tokenPresent, forKey: .tokenPresent)
        try c.encodeIfPresent(tokenExpiresAt, forKey: .tokenExpiresAt)
        try c.encode(pausedTracks, forKey: .pausedTracks)
        try c.encode(channels, forKey: .channels)
        try c.encode(upload, forKey: .upload)       // null when none
        try c.encode(earlierUploads, forKey: .earlierUploads)
        try c.encodeIfPresent(displayBackend, forKey: .displayBackend)
        try c.encodeIfPresent(daemon, forKey: .daemon)
    }
}

/// Which display server display channels come from (`getChannels`, `getStatus`):
/// `{"backend":"wayland","reason":"a Wayland session (WAYLAND_DISPLAY=wayland-0): …"}`.
public struct DisplayBackendInfo: Codable, Sendable, Equatable {
    /// `x11` or `wayland`.
    public var backend: String
    /// Why: the setting, or what the session's environment says.
    public var reason: String

    public init(backend: String, reason: String) {
        self.backend = backend
        self.reason = reason
    }
}

/// The result of `getChannels`.
public struct ChannelsResult: Codable, Sendable, Equatable {
    public struct Channel: Codable, Sendable, Equatable {
        public var channelId: String
        public var type: MediaType
        public var name: String

        public init(channelId: String, type: MediaType, name: String) {
            self.channelId = channelId
            self.type = type
            self.name = name
        }

        enum CodingKeys: String, CodingKey {
            case channelId = "channel_id", type, name
        }
    }

    public struct Problem: Codable, Sendable, Equatable {
        public var code: String
        public var message: String

        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }

    public var channels: [Channel]
    public var problems: [Problem]
    public var displayBackend: DisplayBackendInfo

    public init(channels: [Channel], problems: [Problem], displayBackend: DisplayBackendInfo) {
        self.channels = channels
        self.problems = problems
        self.displayBackend = displayBackend
    }
}

/// The result of `requestPermission`.
public struct PermissionResult: Codable, Sendable, Equatable {
    /// `microphone`, `screen-capture` or `system-audio`.
    public var permission: String
    /// `granted` or `denied`.
    public var status: String
    /// Why it was denied.
    public var reason: String?
    /// The error code of a denial (`DISPLAY_UNAVAILABLE`, `AUDIO_UNAVAILABLE`, `PERMISSION_DENIED`, `TIMEOUT`).
    public var code: String?
    /// Wayland: the monitor the user shared (or whose kept consent restored).
    public var monitor: String?

    public init(permission: String, status: String, reason: String? = nil, code: String? = nil, monitor: String? = nil) {
        self.permission = permission
        self.status = status
        self.reason = reason
        self.code = code
        self.monitor = monitor
    }
}

/// The result of `stopRecording`.
public struct StopRecordingResult: Codable, Sendable, Equatable {
    public var sessionId: String
    /// `stopped`, or `failed` when the session ended with an error.
    public var state: SessionState
    public var summary: RecordingSummary

    public init(sessionId: String, state: SessionState, summary: RecordingSummary) {
        self.sessionId = sessionId
        self.state = state
        self.summary = summary
    }
}

/// The result of `pauseTracks` / `resumeTracks`.
public struct TracksResult: Codable, Sendable, Equatable {
    /// The tracks paused now, sorted (only tracks the session records).
    public var pausedTracks: [Track]
    /// The instant of the request on the session timeline.
    public var atNs: Int64
    /// The tracks this call paused (or resumed), sorted; empty: nothing changed, no event.
    public var changed: [Track]

    public init(pausedTracks: [Track], atNs: Int64, changed: [Track]) {
        self.pausedTracks = pausedTracks
        self.atNs = atNs
        self.changed = changed
    }
}

/// The result of `updateToken`.
public struct UpdateTokenResult: Codable, Sendable, Equatable {
    public var accepted: Bool
    /// Unix seconds, when known (given, or the token's JWT `exp`).
    public var expiresAt: Int64?
    /// The uplink URL the token is for, when known.
    public var endpoint: String?
    /// The sessions whose uploads took the token.
    public var uploads: [String]

    public init(accepted: Bool = true, expiresAt: Int64?, endpoint: String?, uploads: [String]) {
        self.accepted = accepted
        self.expiresAt = expiresAt
        self.endpoint = endpoint
        self.uploads = uploads
    }
}

/// The result of `subscribeEvents` (with `recent`) and `unsubscribeEvents` (without).
public struct SubscriptionResult: Codable, Sendable, Equatable {
    /// This connection's subscription after the call, sorted.
    public var subscribed: [ControlEventName]
    /// `subscribeEvents` only: the kept events of those names, oldest first.
    public var recent: [ControlEvent]?

    public init(subscribed: [ControlEventName], recent: [ControlEvent]? = nil) {
        self.subscribed = subscribed
        self.recent = recent
    }

    enum CodingKeys: String, CodingKey {
        case subscribed, recent
    }

    /// Names and events a newer daemon has and this client does not know are left out, as
    /// `ControlClient` leaves such events out (§2: ignore what you do not know).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        subscribed = try c.decode([String].self, forKey: .subscribed).compactMap(ControlEventName.init(rawValue:))
        recent = try c.decodeIfPresent([JSONValue].self, forKey: .recent)?.compactMap { (message) throws(CaptureError) in
            try ControlEvent(message: message)
        }
    }
}

/// The result of `shutdown`, sent before the daemon stops.
public struct ShutdownResult: Codable, Sendable, Equatable {
    public var shuttingDown: Bool

    public init(shuttingDown: Bool = true) {
        self.shuttingDown = shuttingDown
    }
}
