public import CaptureCore
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif

/// Event names. The raw values are the wire names; never rename one.
public enum ControlEventName: String, Sendable, CaseIterable, Codable, Comparable {
    case recordingStarted = "recording-started"
    case recordingPaused = "recording-paused"
    case recordingResumed = "recording-resumed"
    case recordingStopped = "recording-stopped"
    case recordingComplete = "recording-complete"
    case recordingFailed = "recording-failed"
    case channelError = "channel-error"
    case displayChanged = "display-changed"
    case screenConsent = "screen-consent"
    case uploadProgress = "upload-progress"
    case tokenExpired = "token-expired"
    case uploadFailed = "upload-failed"
    case endpointIncompatible = "endpoint-incompatible"

    /// By wire name: the order `subscribed` lists them in.
    public static func < (a: ControlEventName, b: ControlEventName) -> Bool { a.rawValue < b.rawValue }
}

/// Something that happened, sent to every subscribed client:
///
///     {"type":"event","event":"recording-started","sessionId":"cap-1",
///      "timestamp":"2026-11-22T10:00:00.123Z","timestampUnixNs":…,"data":{…}}
///
/// `channel` is present for channel events; `sessionId` whenever a session is concerned.
/// The event's name and its `data` are one value, `payload`: the daemon cannot send a
/// `data` that is not its event's, and a client reads the fields of the event it got
/// (docs/control-protocol.md §7 lists them; ControlEventWireTests pins each one's bytes).
public struct ControlEvent: Sendable, Equatable, Codable {
    public var sessionId: String?
    /// The channel id as sent (`display:1`); `channelID` is the parsed one.
    public var channel: String?
    public var timestampUnixNs: Int64
    public var payload: Payload

    public init(_ payload: Payload, sessionId: String?, channel: String? = nil, timestampUnixNs: Int64 = WallClock.now()) {
        self.payload = payload
        self.sessionId = sessionId
        self.channel = channel
        self.timestampUnixNs = timestampUnixNs
    }

    public var name: ControlEventName { payload.name }

    /// `channel` as a channel id (nil when absent, or not one this client knows).
    public var channelID: ChannelID? { channel.flatMap { try? ChannelID(parsing: $0) } }

    enum CodingKeys: String, CodingKey {
        case type, event, sessionId, channel, timestamp, timestampUnixNs, data
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("event", forKey: .type)
        try c.encode(name, forKey: .event)
        try c.encodeIfPresent(sessionId, forKey: .sessionId)
        try c.encodeIfPresent(channel, forKey: .channel)
        try c.encode(WallClock.iso8601(nanoseconds: timestampUnixNs), forKey: .timestamp)
        try c.encode(timestampUnixNs, forKey: .timestampUnixNs)
        try c.encode(payload.data, forKey: .data)
    }

    /// `timestamp` is not read back: it is `timestampUnixNs` in another form.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let type = try c.decode(String.self, forKey: .type)
        guard type == "event" else {
            throw DecodingError.dataCorruptedError(forKey: .type, in: c, debugDescription: "a \(type), not an event")
        }
        let name = try c.decode(ControlEventName.self, forKey: .event)
        sessionId = try c.decodeIfPresent(String.self, forKey: .sessionId)
        channel = try c.decodeIfPresent(String.self, forKey: .channel)
        timestampUnixNs = try c.decode(Int64.self, forKey: .timestampUnixNs)
        payload = try Payload(name, from: c, forKey: .data)
    }

    /// The framed line the daemon writes.
    public func encodedLine() -> [UInt8] {
        ControlFraming.frame((try? JSONCoding.encoder.encode(self)) ?? Data())
    }

    /// Reads a message a client received. nil: not an event (a response), or an event this
    /// client does not know (a newer daemon's: §2 says to ignore what one does not know).
    /// A known event whose fields are not the documented ones is INTERNAL_ERROR, as a line
    /// that is not JSON is: dropping it would leave the caller waiting for it instead.
    public init?(message: JSONValue) throws(CaptureError) {
        struct Envelope: Decodable {
            var type: String?
            var event: String?
        }
        let data: Data
        let envelope: Envelope
        do {
            data = try JSONCoding.encoder.encode(message)
            envelope = try JSONCoding.decoder.decode(Envelope.self, from: data)
        } catch {
            return nil   // not an object: not an event
        }
        guard envelope.type == "event", let name = envelope.event.flatMap(ControlEventName.init(rawValue:)) else { return nil }
        do {
            self = try JSONCoding.decoder.decode(ControlEvent.self, from: data)
        } catch {
            throw CaptureError(.internalError, "the daemon sent a \(name.rawValue) event this client does not understand: \(error)")
        }
    }
}

// MARK: The payloads

extension ControlEvent {
    /// One case per event, carrying its `data`.
    public enum Payload: Sendable, Equatable {
        /// `data` is the `startRecording` result.
        case recordingStarted(StartRecordingResult)
        case recordingPaused(TracksChanged)
        case recordingResumed(TracksChanged)
        case recordingStopped(RecordingStopped)
        case recordingComplete(RecordingComplete)
        case recordingFailed(RecordingFailed)
        case channelError(ChannelError)
        case displayChanged(DisplayChanged)
        case screenConsent(ScreenConsent)
        case uploadProgress(UploadProgressUpdate)
        case tokenExpired(TokenExpired)
        case uploadFailed(UploadFailed)
        case endpointIncompatible(EndpointIncompatible)

        public var name: ControlEventName {
            switch self {
            case .recordingStarted: .recordingStarted
            case .recordingPaused: .recordingPaused
            case .recordingResumed: .recordingResumed
            case .recordingStopped: .recordingStopped
            case .recordingComplete: .recordingComplete
            case .recordingFailed: .recordingFailed
            case .channelError: .channelError
            case .displayChanged: .displayChanged
            case .screenConsent: .screenConsent
            case .uploadProgress: .uploadProgress
            case .tokenExpired: .tokenExpired
            case .uploadFailed: .uploadFailed
            case .endpointIncompatible: .endpointIncompatible
            }
        }

        /// `data` as JSON, for showing every field whatever the event (`capturectl events`).
        public var dataValue: JSONValue { (try? JSONValue(encoding: data)) ?? .object([:]) }

        /// What goes under `data`.
        var data: any Encodable {
            switch self {
            case .recordingStarted(let d): d
            case .recordingPaused(let d), .recordingResumed(let d): d
            case .recordingStopped(let d): d
            case .recordingComplete(let d): d
            case .recordingFailed(let d): d
            case .channelError(let d): d
            case .displayChanged(let d): d
            case .screenConsent(let d): d
            case .uploadProgress(let d): d
            case .tokenExpired(let d): d
            case .uploadFailed(let d): d
            case .endpointIncompatible(let d): d
            }
        }

        /// Reads `data` as the named event's.
        init<Key: CodingKey>(_ name: ControlEventName, from c: KeyedDecodingContainer<Key>, forKey key: Key) throws {
            switch name {
            case .recordingStarted: self = .recordingStarted(try c.decode(StartRecordingResult.self, forKey: key))
            case .recordingPaused: self = .recordingPaused(try c.decode(TracksChanged.self, forKey: key))
            case .recordingResumed: self = .recordingResumed(try c.decode(TracksChanged.self, forKey: key))
            case .recordingStopped: self = .recordingStopped(try c.decode(RecordingStopped.self, forKey: key))
            case .recordingComplete: self = .recordingComplete(try c.decode(RecordingComplete.self, forKey: key))
            case .recordingFailed: self = .recordingFailed(try c.decode(RecordingFailed.self, forKey: key))
            case .channelError: self = .channelError(try c.decode(ChannelError.self, forKey: key))
            case .displayChanged: self = .displayChanged(try c.decode(DisplayChanged.self, forKey: key))
            case .screenConsent: self = .screenConsent(try c.decode(ScreenConsent.self, forKey: key))
            case .uploadProgress: self = .uploadProgress(try c.decode(UploadProgressUpdate.self, forKey: key))
            case .tokenExpired: self = .tokenExpired(try c.decode(TokenExpired.self, forKey: key))
            case .uploadFailed: self = .uploadFailed(try c.decode(UploadFailed.self, forKey: key))
            case .endpointIncompatible: self = .endpointIncompatible(try c.decode(EndpointIncompatible.self, forKey: key))
            }
        }
    }

    /// `recording-paused`, `recording-resumed`.
    public struct TracksChanged: Codable, Sendable, Equatable {
        /// The tracks this call paused (or resumed), sorted.
        public var tracks: [Track]
        /// The instant of the request on the session timeline.
        public var atNs: Int64
        /// The tracks paused now, sorted.
        public var pausedTracks: [Track]

        public init(tracks: [Track], atNs: Int64, pausedTracks: [Track]) {
            self.tracks = tracks
            self.atNs = atNs
            self.pausedTracks = pausedTracks
        }
    }

    /// `recording-stopped`.
    public struct RecordingStopped: Codable, Sendable, Equatable {
        public var summary: RecordingSummary

        public init(summary: RecordingSummary) {
            self.summary = summary
        }
    }

    /// `recording-complete`: every chunk is where it goes, the spool or the endpoint.
    public struct RecordingComplete: Codable, Sendable, Equatable {
        public enum Destination: String, Codable, Sendable {
            case spool, endpoint
        }

        /// Over all channels; with an endpoint, those it acknowledged.
        public var chunks: Int
        public var bytes: Int
        public var deliveredTo: Destination
        /// `spool` only.
        public var outputDirectory: String?
        /// `endpoint` only: the uplink URL.
        public var endpoint: String?

        public init(chunks: Int, bytes: Int, deliveredTo: Destination, outputDirectory: String? = nil, endpoint: String? = nil) {
            self.chunks = chunks
            self.bytes = bytes
            self.deliveredTo = deliveredTo
            self.outputDirectory = outputDirectory
            self.endpoint = endpoint
        }

        public static func spool(chunks: Int, bytes: Int, outputDirectory: String) -> Self {
            Self(chunks: chunks, bytes: bytes, deliveredTo: .spool, outputDirectory: outputDirectory)
        }

        public static func endpoint(chunks: Int, bytes: Int, endpoint: String) -> Self {
            Self(chunks: chunks, bytes: bytes, deliveredTo: .endpoint, endpoint: endpoint)
        }
    }

    /// `recording-failed`.
    public struct RecordingFailed: Codable, Sendable, Equatable {
        public enum Phase: String, Codable, Sendable {
            /// The start failed: no `recording-stopped` follows.
            case start
            /// While recording or stopping: `recording-stopped` and `recording-complete` follow.
            case recording
        }

        public var code: CaptureErrorCode
        public var message: String
        public var phase: Phase
        /// `recording` only.
        public var summary: RecordingSummary?

        public init(code: CaptureErrorCode, message: String, phase: Phase, summary: RecordingSummary? = nil) {
            self.code = code
            self.message = message
            self.phase = phase
            self.summary = summary
        }

        public init(_ error: CaptureError, phase: Phase, summary: RecordingSummary? = nil) {
            self.init(code: error.code, message: error.message, phase: phase, summary: summary)
        }
    }

    /// `channel-error`: a stall (`CHANNEL_STALLED`) or an audio interruption
    /// (`AUDIO_UNAVAILABLE`), and the end of either (`recovered`).
    public struct ChannelError: Codable, Sendable, Equatable {
        public var code: CaptureErrorCode
        public var message: String
        public var recovered: Bool
        /// An audio interruption (not recovered): how many so far.
        public var interruptions: Int?
        /// An audio interruption recovered: the silence filled in so far.
        public var silenceFilledMs: Int?

        public init(code: CaptureErrorCode, message: String, recovered: Bool, interruptions: Int? = nil, silenceFilledMs: Int? = nil) {
            self.code = code
            self.message = message
            self.recovered = recovered
            self.interruptions = interruptions
            self.silenceFilledMs = silenceFilledMs
        }
    }

    /// `display-changed`: a display channel's monitor changed, went off or came back.
    public struct DisplayChanged: Codable, Sendable, Equatable {
        public enum State: String, Codable, Sendable {
            /// Another mode or position: scaled into the stream's size.
            case changed
            /// Off or unplugged: black from now on.
            case lost
            /// Back after `lost`.
            case restored
        }

        public struct Monitor: Codable, Sendable, Equatable {
            public var name: String
            public var x: Int, y: Int, width: Int, height: Int

            public init(name: String, x: Int, y: Int, width: Int, height: Int) {
                self.name = name
                self.x = x
                self.y = y
                self.width = width
                self.height = height
            }
        }

        public struct Size: Codable, Sendable, Equatable {
            public var width: Int, height: Int

            public init(width: Int, height: Int) {
                self.width = width
                self.height = height
            }
        }

        public struct Rect: Codable, Sendable, Equatable {
            public var x: Int, y: Int, width: Int, height: Int

            public init(x: Int, y: Int, width: Int, height: Int) {
                self.x = x
                self.y = y
                self.width = width
                self.height = height
            }
        }

        public var state: State
        /// The monitor now; for `lost` the last known one.
        public var monitor: Monitor
        /// The stream's size (it never changes).
        public var output: Size
        /// Where the monitor's picture lies in the stream.
        public var picture: Rect
        /// On the session timeline.
        public var atNs: Int64

        public init(state: State, monitor: Monitor, output: Size, picture: Rect, atNs: Int64) {
            self.state = state
            self.monitor = monitor
            self.output = output
            self.picture = picture
            self.atNs = atNs
        }
    }

    /// `screen-consent` (Wayland): a display's screen-sharing consent was asked for,
    /// restored, given or refused.
    public struct ScreenConsent: Codable, Sendable, Equatable {
        public typealias State = ScreenConsentState

        public var state: State
        /// For humans.
        public var reason: String
        /// The connector asked for, when known.
        public var monitor: String?
        /// The connector shared.
        public var sharedMonitor: String?

        public init(state: State, reason: String, monitor: String? = nil, sharedMonitor: String? = nil) {
            self.state = state
            self.reason = reason
            self.monitor = monitor
            self.sharedMonitor = sharedMonitor
        }
    }

    /// `upload-progress`: where the session's upload stands (a part of getStatus's `upload`).
    public struct UploadProgressUpdate: Codable, Sendable, Equatable {
        public var connected: Bool
        public var chunksUploaded: Int
        public var bytesUploaded: Int
        public var chunksPending: Int
        public var bytesPending: Int
        public var uploadLagMs: Int64
        /// The uplink URL.
        public var endpoint: String

        public init(connected: Bool, chunksUploaded: Int, bytesUploaded: Int, chunksPending: Int, bytesPending: Int,
                    uploadLagMs: Int64, endpoint: String) {
            self.connected = connected
            self.chunksUploaded = chunksUploaded
            self.bytesUploaded = bytesUploaded
            self.chunksPending = chunksPending
            self.bytesPending = bytesPending
            self.uploadLagMs = uploadLagMs
            self.endpoint = endpoint
        }
    }

    /// `token-expired`: from the daemon's expiry check (`expiredAt`), or from the endpoint
    /// refusing the token (`reason`, `closeCode`).
    public struct TokenExpired: Codable, Sendable, Equatable {
        /// Why the endpoint refused the token (its close code: 4011, 4012, 4010).
        public enum Reason: String, Codable, Sendable {
            case expired, revoked, invalid
        }

        public var message: String
        /// The expiry check: the expiry, Unix seconds.
        public var expiredAt: Int64?
        /// The endpoint refused the token.
        public var reason: Reason?
        public var closeCode: Int?

        public init(message: String, expiredAt: Int64? = nil, reason: Reason? = nil, closeCode: Int? = nil) {
            self.message = message
            self.expiredAt = expiredAt
            self.reason = reason
            self.closeCode = closeCode
        }
    }

    /// `upload-failed`: the upload stopped for good; the chunks stay in the spool.
    public struct UploadFailed: Codable, Sendable, Equatable {
        /// `UPLOAD_REFUSED` (the endpoint refused the session), or the error of an upload that
        /// could not begin.
        public var code: CaptureErrorCode
        public var message: String
        /// `UPLOAD_REFUSED`: the endpoint's close code, nil (`null`) when it closed without one.
        /// An upload that could not begin has none and sends no `closeCode` key.
        public var closeCode: Int?

        public init(code: CaptureErrorCode, message: String, closeCode: Int? = nil) {
            self.code = code
            self.message = message
            self.closeCode = closeCode
        }

        enum CodingKeys: String, CodingKey {
            case code, message, closeCode
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(code, forKey: .code)
            try c.encode(message, forKey: .message)
            // A refusal always says whether the endpoint gave a code (null: none), as it
            // always has; an upload that could not begin never had the key.
            if code == .uploadRefused {
                try c.encode(closeCode, forKey: .closeCode)
            } else {
                try c.encodeIfPresent(closeCode, forKey: .closeCode)
            }
        }
    }

    /// `endpoint-incompatible`: what answers at the uplink URL does not speak the capture
    /// uplink protocol; the upload keeps retrying.
    public struct EndpointIncompatible: Codable, Sendable, Equatable {
        /// Always `ENDPOINT_INCOMPATIBLE`.
        public var code: CaptureErrorCode
        /// The uplink URL.
        public var endpoint: String
        /// The HTTP status that answered the upgrade; nil (`null`) when the WebSocket opened
        /// but no welcome came.
        public var httpStatus: Int?
        public var message: String

        public init(endpoint: String, httpStatus: Int?, message: String) {
            code = .endpointIncompatible
            self.endpoint = endpoint
            self.httpStatus = httpStatus
            self.message = message
        }

        enum CodingKeys: String, CodingKey {
            case code, endpoint, httpStatus, message
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(code, forKey: .code)
            try c.encode(endpoint, forKey: .endpoint)
            try c.encode(httpStatus, forKey: .httpStatus)   // null when none, never left out
            try c.encode(message, forKey: .message)
        }
    }
}

// MARK: Reading one kind of event

extension ControlEvent {
    /// The payload when the event is that one; nil otherwise. (`event.channelError?.recovered`
    /// reads as the check it is.)
    public var recordingStarted: StartRecordingResult? {
        if case .recordingStarted(let d) = payload { d } else { nil }
    }
    public var recordingPaused: TracksChanged? {
        if case .recordingPaused(let d) = payload { d } else { nil }
    }
    public var recordingResumed: TracksChanged? {
        if case .recordingResumed(let d) = payload { d } else { nil }
    }
    public var recordingStopped: RecordingStopped? {
        if case .recordingStopped(let d) = payload { d } else { nil }
    }
    public var recordingComplete: RecordingComplete? {
        if case .recordingComplete(let d) = payload { d } else { nil }
    }
    public var recordingFailed: RecordingFailed? {
        if case .recordingFailed(let d) = payload { d } else { nil }
    }
    public var channelError: ChannelError? {
        if case .channelError(let d) = payload { d } else { nil }
    }
    public var displayChanged: DisplayChanged? {
        if case .displayChanged(let d) = payload { d } else { nil }
    }
    public var screenConsent: ScreenConsent? {
        if case .screenConsent(let d) = payload { d } else { nil }
    }
    public var uploadProgress: UploadProgressUpdate? {
        if case .uploadProgress(let d) = payload { d } else { nil }
    }
    public var tokenExpired: TokenExpired? {
        if case .tokenExpired(let d) = payload { d } else { nil }
    }
    public var uploadFailed: UploadFailed? {
        if case .uploadFailed(let d) = payload { d } else { nil }
    }
    public var endpointIncompatible: EndpointIncompatible? {
        if case .endpointIncompatible(let d) = payload { d } else { nil }
    }
}
