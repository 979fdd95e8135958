public import CaptureCore

/// The uplink protocol's constants. `docs/uplink-protocol.md` is the
/// specification; this module is its one implementation of the messages,
/// shared by the endpoint, the agent and the tests.
public enum UplinkProtocol {
    /// The protocol version a hello names and a welcome confirms.
    public static let version = 1
    /// The WebSocket path on the endpoint.
    public static let path = "/capture/uplink"
    /// The largest chunk (media bytes) a frame may carry unless the welcome says otherwise.
    public static let defaultMaxChunkBytes = 32 << 20
    /// The largest chunk header (JSON) a frame may carry.
    public static let maxHeaderBytes = 16 << 10
    /// The largest text message (hello, end) either side sends.
    public static let maxTextBytes = 64 << 10
    /// How long the endpoint waits for the hello after the upgrade.
    public static let helloTimeoutSeconds = 10
    /// The longest session timeline: a chunk starts within it, and a channel's chunks last
    /// at most this long in all (31 days, in ns), so no sum of client numbers overflows.
    public static let maxTimelineNs: Int64 = 31 * 86_400 * 1_000_000_000
    /// The largest single WebSocket frame either side accepts: a chunk frame (up to
    /// `maxChunkBytes`) travels as a message fragmented into frames of at most this. A
    /// connection's memory before its hello is then this frame plus the 64 KiB message
    /// limit, not a whole chunk's worth (the agent sends 256 KiB fragments).
    public static let maxFrameBytes = 1 << 20
    /// How far a chunk's media timestamps may stray outside its header's start..start+duration
    /// (an encoder's reordering, a muxer's offset); farther is `media-mismatch`.
    public static let mediaToleranceNs: Int64 = 2_000_000_000
    /// The longest chunk (1 h, in ns).
    public static let maxChunkDurationNs: Int64 = 3_600_000_000_000
}

// MARK: Client -> endpoint

/// One channel of the session, as the hello names it. The endpoint stores it
/// and a reconnect must name the same set.
public struct UplinkChannel: Codable, Sendable, Equatable {
    /// The agent's channel id: `display:1`, `mic:default`, `system_audio:default`, ...
    public var channelId: String
    public var mediaType: MediaType
    /// `h264` or `aac`.
    public var codec: String
    /// Always `mpegts`: every chunk is a self-contained MPEG-TS segment.
    public var container: String
    /// A human name (the monitor's or device's), for the session's channel list.
    public var name: String?
    /// Whether this is the session's primary video channel (the export's picture).
    public var isPrimary: Bool?
    /// The chunk length the agent cuts at, nanoseconds (the last chunk may be shorter).
    public var chunkDurationNs: Int64
    /// Video only.
    public var width: Int?
    public var height: Int?
    public var frameRate: Int?
    /// Audio only.
    public var sampleRate: Int?
    public var audioChannels: Int?

    public init(channelId: String, mediaType: MediaType, codec: String, container: String = "mpegts",
                name: String? = nil, isPrimary: Bool? = nil, chunkDurationNs: Int64,
                width: Int? = nil, height: Int? = nil, frameRate: Int? = nil,
                sampleRate: Int? = nil, audioChannels: Int? = nil) {
        self.channelId = channelId
        self.mediaType = mediaType
        self.codec = codec
        self.container = container
        self.name = name
        self.isPrimary = isPrimary
        self.chunkDurationNs = chunkDurationNs
        self.width = width
        self.height = height
        self.frameRate = frameRate
        self.sampleRate = sampleRate
        self.audioChannels = audioChannels
    }
}

/// The first message on a connection (text): who is uploading what.
public struct UplinkHello: Codable, Sendable, Equatable {
    public var type: String = "hello"
    public var protocolVersion: Int
    /// The client token (`POST /capture/session/token`). It is the only
    /// credential; the endpoint never echoes or logs it.
    public var token: String
    public var sessionId: String
    /// `capture-agent/1.2.0`, for the endpoint's logs.
    public var agent: String?
    public var channels: [UplinkChannel]

    public init(token: String, sessionId: String, agent: String? = nil, channels: [UplinkChannel],
                protocolVersion: Int = UplinkProtocol.version) {
        self.protocolVersion = protocolVersion
        self.token = token
        self.sessionId = sessionId
        self.agent = agent
        self.channels = channels
    }
}

/// The client has sent every chunk of every channel (each channel's last one
/// with `isFinal`), and asks the endpoint to close the session's stream.
///
/// `interrupted: true`: the capture ended without final chunks (the client died
/// mid-session and delivers what its spool kept); the endpoint closes each
/// channel without a final chunk at what it has stored.
public struct UplinkEnd: Codable, Sendable, Equatable {
    public var type: String = "end"
    public var interrupted: Bool?
    public init(interrupted: Bool? = nil) { self.interrupted = interrupted }
}

// MARK: Endpoint -> client

/// Where one channel stands on the endpoint.
public struct UplinkChannelProgress: Codable, Sendable, Equatable {
    public var channelId: String
    /// The seq the endpoint expects next: every chunk before it is stored.
    public var nextSeq: Int
    /// The channel's final chunk is stored; nothing more is accepted for it.
    public var complete: Bool

    public init(channelId: String, nextSeq: Int, complete: Bool) {
        self.channelId = channelId
        self.nextSeq = nextSeq
        self.complete = complete
    }
}

/// The answer to a good hello: resume each channel at `nextSeq`.
public struct UplinkWelcome: Codable, Sendable, Equatable {
    public var type: String = "welcome"
    public var protocolVersion: Int
    public var sessionId: String
    /// The session's status after the hello (`starting`, `active`, ...).
    public var status: String
    public var channels: [UplinkChannelProgress]
    /// The largest chunk the endpoint accepts, bytes.
    public var maxChunkBytes: Int
    /// How many chunks the client may have sent and not yet seen acknowledged.
    public var window: Int

    public init(sessionId: String, status: String, channels: [UplinkChannelProgress], maxChunkBytes: Int,
                window: Int, protocolVersion: Int = UplinkProtocol.version) {
        self.protocolVersion = protocolVersion
        self.sessionId = sessionId
        self.status = status
        self.channels = channels
        self.maxChunkBytes = maxChunkBytes
        self.window = window
    }
}

/// A chunk is durably stored (file fsync'ed and indexed): the client may delete it.
public struct UplinkAck: Codable, Sendable, Equatable {
    public var type: String = "ack"
    public var channelId: String
    public var seq: Int
    public var sha256: String
    /// The chunk was already stored (a resend): acknowledged again, not stored twice.
    public var duplicate: Bool

    public init(channelId: String, seq: Int, sha256: String, duplicate: Bool) {
        self.channelId = channelId
        self.seq = seq
        self.sha256 = sha256
        self.duplicate = duplicate
    }
}

/// The answer to `end`: every channel is complete, the session is stopped.
/// The endpoint closes the connection (1000) right after it.
public struct UplinkEnded: Codable, Sendable, Equatable {
    public var type: String = "ended"
    public var sessionId: String
    public var status: String
    public var channels: [UplinkChannelProgress]

    public init(sessionId: String, status: String, channels: [UplinkChannelProgress]) {
        self.sessionId = sessionId
        self.status = status
        self.channels = channels
    }
}

/// Something the client sent was refused. A chunk error names the chunk; the
/// connection stays open unless a close follows.
public struct UplinkErrorMessage: Codable, Sendable, Equatable {
    public var type: String = "error"
    public var code: UplinkErrorCode
    public var message: String
    public var channelId: String?
    public var seq: Int?
    /// For `seq-gap` and `seq-behind`: the seq the endpoint expects.
    public var expectedSeq: Int?
    /// For `busy`: how long to wait before the next hello, in milliseconds.
    public var retryAfterMs: Int?

    public init(code: UplinkErrorCode, message: String, channelId: String? = nil, seq: Int? = nil,
                expectedSeq: Int? = nil, retryAfterMs: Int? = nil) {
        self.code = code
        self.message = message
        self.channelId = channelId
        self.seq = seq
        self.expectedSeq = expectedSeq
        self.retryAfterMs = retryAfterMs
    }

    /// The endpoint is overloaded: say hello again in `retryAfterMs` at the soonest.
    public static func busy(retryAfterMs: Int) -> UplinkErrorMessage {
        UplinkErrorMessage(code: .busy, message: "the endpoint is overloaded; say hello again in \(retryAfterMs) ms",
                           retryAfterMs: retryAfterMs)
    }
}

// MARK: Decoding a text message

/// Any text message, decoded by its `type`.
public enum UplinkTextMessage: Sendable, Equatable {
    case hello(UplinkHello)
    case end(UplinkEnd)
    case welcome(UplinkWelcome)
    case ack(UplinkAck)
    case ended(UplinkEnded)
    case error(UplinkErrorMessage)

    private struct Envelope: Decodable { var type: String }

    /// Decodes one text message. Throws `bad-message` for anything that is not
    /// one of the protocol's messages.
    public init(decoding text: some StringProtocol) throws(UplinkError) {
        let data = Array(text.utf8)
        guard data.count <= UplinkProtocol.maxTextBytes else {
            throw UplinkError(.badMessage, "text message of \(data.count) bytes (at most \(UplinkProtocol.maxTextBytes))")
        }
        let decoder = JSONCoding.decoder
        let type: String
        do {
            type = try decoder.decode(Envelope.self, from: Data(data)).type
        } catch {
            throw UplinkError(.badMessage, "a text message must be a JSON object with a string \"type\"")
        }
        do {
            switch type {
            case "hello": self = .hello(try decoder.decode(UplinkHello.self, from: Data(data)))
            case "end": self = .end(try decoder.decode(UplinkEnd.self, from: Data(data)))
            case "welcome": self = .welcome(try decoder.decode(UplinkWelcome.self, from: Data(data)))
            case "ack": self = .ack(try decoder.decode(UplinkAck.self, from: Data(data)))
            case "ended": self = .ended(try decoder.decode(UplinkEnded.self, from: Data(data)))
            case "error": self = .error(try decoder.decode(UplinkErrorMessage.self, from: Data(data)))
            default: throw UplinkError(.badMessage, "unknown message type '\(type.prefix(40))'")
            }
        } catch let error as UplinkError {
            throw error
        } catch {
            throw UplinkError(.badMessage, "malformed '\(type)' message: \(UplinkError.describe(error))")
        }
    }

    /// Compact JSON text of a message.
    public static func encode(_ message: some Encodable) -> String {
        JSONCoding.text(message)
    }
}

#if canImport(FoundationEssentials)
import struct FoundationEssentials.Data
#else
import struct Foundation.Data
#endif
