public import CaptureCore

/// Every command of the control protocol. The first eight are the VideoDB
/// SDK's; the rest are ours. Raw values are the wire names.
public enum ControlCommand: String, Sendable, CaseIterable {
    case initialize = "init"
    case requestPermission
    case getChannels
    case startRecording
    case stopRecording
    case pauseTracks
    case resumeTracks
    case shutdown
    case getStatus
    case updateToken
    case subscribeEvents
    case unsubscribeEvents
    case ping
}

/// The tracks `pauseTracks` / `resumeTracks` name.
public enum Track: String, Sendable, CaseIterable, Codable, Comparable {
    case mic
    case systemAudio = "system_audio"
    case screen

    public static func < (a: Track, b: Track) -> Bool { a.rawValue < b.rawValue }

    /// The track a channel belongs to.
    public init(channel: ChannelID) {
        switch channel {
        case .display: self = .screen
        case .microphone: self = .mic
        case .systemAudio: self = .systemAudio
        }
    }
}

public enum Permission: String, Sendable {
    case microphone
    case screenCapture = "screen-capture"
    case systemAudio = "system-audio"

    /// Accepts the SDKs' spellings: `screen-capture`, `screen_capture`, `screen`, ...
    public init?(wire: String) {
        switch wire {
        case "microphone", "mic": self = .microphone
        case "screen-capture", "screen_capture", "screen", "display": self = .screenCapture
        case "system-audio", "system_audio": self = .systemAudio
        default: return nil
        }
    }
}

/// Reads typed values out of a request's params, with INVALID_REQUEST errors
/// that name the parameter and what was expected. Unknown keys are ignored
/// (newer clients may send more).
public struct ParamReader: Sendable {
    public let params: [String: JSONValue]
    public let command: String

    public init(_ request: ControlRequest) {
        params = request.params
        command = request.command
    }

    private func bad(_ key: String, _ expected: String, _ got: JSONValue) -> CaptureError {
        CaptureError(.invalidRequest, "\(command): params.\(key) must be \(expected), not \(got.typeName)")
    }

    public func string(_ key: String, maxBytes: Int = 4096) throws(CaptureError) -> String? {
        switch params[key] {
        case nil, .null?: return nil
        case .string(let s)?:
            guard s.utf8.count <= maxBytes else {
                throw CaptureError(.invalidRequest, "\(command): params.\(key) is longer than \(maxBytes) bytes")
            }
            return s
        case let v?: throw bad(key, "a string", v)
        }
    }

    public func requiredString(_ key: String, maxBytes: Int = 4096) throws(CaptureError) -> String {
        guard let s = try string(key, maxBytes: maxBytes), !s.isEmpty else {
            throw CaptureError(.invalidRequest, "\(command): params.\(key) is required (a non-empty string)")
        }
        return s
    }

    public func bool(_ key: String) throws(CaptureError) -> Bool? {
        switch params[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        case let v?: throw bad(key, "true or false", v)
        }
    }

    public func integer(_ key: String) throws(CaptureError) -> Int64? {
        switch params[key] {
        case nil, .null?: return nil
        case let v?:
            guard let i = v.int64Value else { throw bad(key, "an integer", v) }
            return i
        }
    }

    /// A Unix time in seconds, 0 through the end of year 9999: a token's expiry a client
    /// states (a negative or absurd one is refused, not scheduled).
    public func unixSeconds(_ key: String) throws(CaptureError) -> Int64? {
        guard let t = try integer(key) else { return nil }
        guard (0...253_402_300_799).contains(t) else {
            throw CaptureError(.invalidRequest, "params.\(key) must be Unix seconds from 0 to 253402300799 (year 9999), not \(t)")
        }
        return t
    }

    public func stringArray(_ key: String, maxCount: Int = 64) throws(CaptureError) -> [String]? {
        switch params[key] {
        case nil, .null?: return nil
        case .array(let items)?:
            guard items.count <= maxCount else {
                throw CaptureError(.invalidRequest, "\(command): params.\(key) has more than \(maxCount) items")
            }
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item, s.utf8.count <= 4096 else { throw bad("\(key)[\(i)]", "a string", item) }
                out.append(s)
            }
            return out
        case let v?: throw bad(key, "an array of strings", v)
        }
    }

    /// An array of names of `T`'s cases, as a set; nil when absent. An unknown
    /// name is INVALID_REQUEST listing the known ones.
    public func nameSet<T: RawRepresentable & CaseIterable & Hashable>(_ key: String, of type: T.Type, noun: String,
                                                                      maxCount: Int) throws(CaptureError) -> Set<T>?
        where T.RawValue == String
    {
        guard let names = try stringArray(key, maxCount: maxCount) else { return nil }
        var out = Set<T>()
        for name in names {
            guard let value = T(rawValue: name) else {
                let known = T.allCases.map(\.rawValue).joined(separator: ", ")
                throw CaptureError(.invalidRequest, "\(command): unknown \(noun) '\(name)' (\(known))")
            }
            out.insert(value)
        }
        return out
    }

    public func objectArray(_ key: String, maxCount: Int = 64) throws(CaptureError) -> [[String: JSONValue]]? {
        switch params[key] {
        case nil, .null?: return nil
        case .array(let items)?:
            guard items.count <= maxCount else {
                throw CaptureError(.invalidRequest, "\(command): params.\(key) has more than \(maxCount) items")
            }
            var out: [[String: JSONValue]] = []
            for (i, item) in items.enumerated() {
                guard case .object(let o) = item else { throw bad("\(key)[\(i)]", "an object", item) }
                out.append(o)
            }
            return out
        case let v?: throw bad(key, "an array of objects", v)
        }
    }
}

// MARK: Typed parameters

/// `startRecording` params. Channels: the SDK's list of
/// `{channel_id, type, name, store, is_primary}`; absent or empty means the
/// daemon's configured channels (by default display:1, mic:default and
/// system_audio:default, where present).
public struct StartRecordingParams: Sendable, Equatable {
    public struct Channel: Sendable, Equatable {
        public var id: ChannelID
        public var store: Bool
        public var isPrimary: Bool
    }

    public var sessionId: String?
    public var uploadToken: String?
    public var tokenExpiresAtUnixSeconds: Int64?
    public var endpoint: String?
    public var channels: [Channel]

    public init(_ request: ControlRequest) throws(CaptureError) {
        let p = ParamReader(request)
        sessionId = try p.string("sessionId", maxBytes: 128)
        uploadToken = try p.string("uploadToken", maxBytes: 16384)
        if let token = uploadToken, !UpdateTokenParams.isWellFormed(token) {
            throw CaptureError(.invalidToken, "startRecording: an upload token is printable ASCII without spaces")
        }
        tokenExpiresAtUnixSeconds = try p.unixSeconds("tokenExpiresAt")
        endpoint = try p.string("endpoint", maxBytes: 2048)
        if let endpoint, !["ws://", "wss://", "http://", "https://"].contains(where: endpoint.hasPrefix) {
            throw CaptureError(.invalidRequest, "startRecording: params.endpoint must be a ws://, wss://, http:// or https:// URL")
        }
        // Older SDKs name the primary video channel at the top level.
        let primaryId = try p.string("primary_video_channel_id", maxBytes: 256)
        channels = []
        for (i, object) in (try p.objectArray("channels") ?? []).enumerated() {
            guard case .string(let text)? = object["channel_id"] ?? object["channelId"] else {
                throw CaptureError(.invalidRequest, "startRecording: params.channels[\(i)].channel_id is required (a string such as \"display:1\")")
            }
            let id = try ChannelID(parsing: text)
            var store = true
            switch object["store"] {
            case nil, .null?: break
            case .bool(let b)?: store = b
            case let v?: throw CaptureError(.invalidRequest, "startRecording: params.channels[\(i)].store must be true or false, not \(v.typeName)")
            }
            var primary = false
            switch object["is_primary"] ?? object["isPrimary"] {
            case nil, .null?: break
            case .bool(let b)?: primary = b
            case let v?: throw CaptureError(.invalidRequest, "startRecording: params.channels[\(i)].is_primary must be true or false, not \(v.typeName)")
            }
            if let primaryId, primaryId == id.description { primary = true }
            guard !channels.contains(where: { $0.id == id }) else {
                throw CaptureError(.invalidChannels, "startRecording: channel \(id) is listed twice")
            }
            channels.append(Channel(id: id, store: store, isPrimary: primary))
        }
    }
}

/// `pauseTracks` / `resumeTracks` params: `{"tracks": ["mic", "system_audio", "screen"]}`;
/// absent means every track.
public struct TracksParams: Sendable, Equatable {
    public var tracks: Set<Track>

    public init(_ request: ControlRequest) throws(CaptureError) {
        guard let out = try ParamReader(request).nameSet("tracks", of: Track.self, noun: "track", maxCount: 16) else {
            tracks = Set(Track.allCases)
            return
        }
        guard !out.isEmpty else {
            throw CaptureError(.invalidRequest, "\(request.command): params.tracks is empty; name at least one of mic, system_audio, screen")
        }
        tracks = out
    }
}

/// `updateToken` params: `{"token": "...", "expiresAt": <unix seconds, optional>}`.
public struct UpdateTokenParams: Sendable, Equatable {
    public var token: String
    public var expiresAtUnixSeconds: Int64?
    /// **Ours**: the endpoint the token is for (default: the current or last session's,
    /// else `init`'s apiUrl, else the `endpoint` setting).
    public var endpoint: String?

    public init(_ request: ControlRequest) throws(CaptureError) {
        let p = ParamReader(request)
        token = try p.requiredString("token", maxBytes: 16384)
        expiresAtUnixSeconds = try p.unixSeconds("expiresAt")
        endpoint = try p.string("endpoint", maxBytes: 2048)
        if let endpoint, !["ws://", "wss://", "http://", "https://"].contains(where: endpoint.hasPrefix) {
            throw CaptureError(.invalidRequest, "updateToken: params.endpoint must be a ws://, wss://, http:// or https:// URL")
        }
        guard Self.isWellFormed(token) else {
            throw CaptureError(.invalidToken, "updateToken: a token is printable ASCII without spaces")
        }
    }

    /// Printable ASCII without spaces (what HTTP headers and URLs carry unescaped).
    public static func isWellFormed(_ token: String) -> Bool {
        !token.isEmpty && token.unicodeScalars.allSatisfy { $0.value > 0x20 && $0.value < 0x7F }
    }
}

/// `subscribeEvents` / `unsubscribeEvents` params: `{"events": [names]}`; absent means all.
public struct SubscribeParams: Sendable, Equatable {
    public var events: Set<ControlEventName>

    public init(_ request: ControlRequest) throws(CaptureError) {
        guard let out = try ParamReader(request).nameSet("events", of: ControlEventName.self, noun: "event", maxCount: 32) else {
            events = Set(ControlEventName.allCases)
            return
        }
        events = out
    }
}
