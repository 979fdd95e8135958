public import CaptureCore
import Foundation

/// The JSON shapes of the REST API (docs/openapi.yaml), with VideoDB's
/// snake_case names. Built from the records; never stored.

/// A channel of a session, as the VideoDB SDK reads it.
public struct ChannelResource: Codable, Sendable, Equatable {
    public var channelId: String
    public var name: String
    public var type: CaptureCore.MediaType
    public var store: Bool
    public var isPrimary: Bool

    enum CodingKeys: String, CodingKey {
        case channelId = "channel_id", name, type, store, isPrimary = "is_primary"
    }
}

/// One live stream per channel. `channel_id` is the category the SDK filters by
/// (`screen`, `mic`, `system_audio`); `source_channel_id` the agent's id.
public struct RTStreamResource: Codable, Sendable, Equatable {
    public var rtstreamId: String
    public var channelId: String
    public var sourceChannelId: String
    public var name: String
    public var type: CaptureCore.MediaType
    /// `waiting` (no chunk yet), `live`, `ended` (final chunk stored).
    public var status: String
    public var sampleRate: Int?
    public var width: Int?
    public var height: Int?
    public var chunks: Int
    public var durationMs: Int64
    /// The HLS playlist (live until the channel ends).
    public var streamUrl: String
    public var createdAt: String

    enum CodingKeys: String, CodingKey {
        case rtstreamId = "rtstream_id", channelId = "channel_id", sourceChannelId = "source_channel_id", name, type
        case status, sampleRate = "sample_rate", width, height, chunks, durationMs = "duration_ms"
        case streamUrl = "stream_url", createdAt = "created_at"
    }
}

/// A capture session, as `GET /collection/{cid}/capture/session/{sid}` returns it.
/// Only `session_id` names it (never also `id`: the SDK passes both on as
/// arguments and would fail on the duplicate).
public struct CaptureSessionResource: Codable, Sendable, Equatable {
    public var sessionId: String
    public var collectionId: String
    public var endUserId: String
    public var clientId: String?
    public var status: SessionStatus
    public var callbackUrl: String?
    public var wsConnectionId: String?
    public var metadata: JSONValue
    public var channels: [ChannelResource]
    public var primaryVideoChannelId: String?
    public var exportStatus: ExportStatus?
    public var exportedVideoId: String?
    public var failureReason: String?
    public var rtstreams: [RTStreamResource]
    public var createdAt: String
    public var updatedAt: String
    public var startedAt: String?
    public var activeAt: String?
    public var stoppedAt: String?

    enum CodingKeys: String, CodingKey {
        case sessionId = "session_id", collectionId = "collection_id", endUserId = "end_user_id"
        case clientId = "client_id", status, callbackUrl = "callback_url", wsConnectionId = "ws_connection_id"
        case metadata, channels, primaryVideoChannelId = "primary_video_channel_id"
        case exportStatus = "export_status", exportedVideoId = "exported_video_id"
        case failureReason = "failure_reason", rtstreams, createdAt = "created_at", updatedAt = "updated_at"
        case startedAt = "started_at", activeAt = "active_at", stoppedAt = "stopped_at"
    }

    init(_ session: SessionRecord, channels: [ChannelRecord], urls: EndpointURLs) {
        sessionId = session.id
        collectionId = session.collectionId
        endUserId = session.endUserId
        clientId = session.clientId
        status = session.status
        callbackUrl = session.callbackURL
        wsConnectionId = session.wsConnectionId
        metadata = (try? JSONDecoder().decode(JSONValue.self, from: Data(session.metadataJSON.utf8))) ?? .object([:])
        self.channels = channels.map {
            ChannelResource(channelId: $0.channelId, name: $0.name ?? $0.channelId, type: $0.mediaType, store: true,
                            isPrimary: $0.isPrimary)
        }
        primaryVideoChannelId = session.primaryVideoChannelId
        exportStatus = session.exportStatus
        exportedVideoId = session.exportedVideoId
        failureReason = session.failureReason
        let started = Self.time(session.startedAt ?? session.createdAt)
        rtstreams = channels.map { channel in
            RTStreamResource(
                rtstreamId: "rts-\(session.id.dropFirst(4).prefix(12))-\(channel.directoryName)",
                channelId: channel.category, sourceChannelId: channel.channelId,
                name: channel.name ?? channel.channelId, type: channel.mediaType,
                status: channel.complete ? "ended" : (channel.nextSeq == 0 ? "waiting" : "live"),
                sampleRate: channel.sampleRate, width: channel.width, height: channel.height,
                chunks: channel.nextSeq, durationMs: channel.storedDurationNs / 1_000_000,
                streamUrl: urls.playlist(session: session, channel: channel), createdAt: started)
        }
        createdAt = Self.time(session.createdAt)
        updatedAt = Self.time(session.updatedAt)
        startedAt = session.startedAt.map(Self.time)
        activeAt = session.activeAt.map(Self.time)
        stoppedAt = session.stoppedAt.map(Self.time)
    }

    static func time(_ milliseconds: Int64) -> String { WallClock.iso8601(nanoseconds: milliseconds * 1_000_000) }
}

/// `{"sessions": [...]}`.
public struct SessionListResource: Codable, Sendable, Equatable {
    public var sessions: [CaptureSessionResource]
}

/// `POST /capture/session/token`'s answer.
public struct ClientTokenResource: Codable, Sendable, Equatable {
    public var token: String
    public var tokenId: String
    public var expiresIn: Int
    public var expiresAt: String

    enum CodingKeys: String, CodingKey {
        case token, tokenId = "token_id", expiresIn = "expires_in", expiresAt = "expires_at"
    }
}

/// `GET /collection/{cid}/websocket`'s answer.
public struct WebSocketURLResource: Codable, Sendable, Equatable {
    public var websocketUrl: String

    enum CodingKeys: String, CodingKey { case websocketUrl = "websocket_url" }
}

/// The URLs the endpoint hands out.
struct EndpointURLs: Sendable {
    /// `http://host:port`, no trailing slash.
    var base: String

    var webSocketBase: String {
        if base.hasPrefix("https://") { return "wss://" + base.dropFirst(8) }
        if base.hasPrefix("http://") { return "ws://" + base.dropFirst(7) }
        return base
    }

    func playlist(session: SessionRecord, channel: ChannelRecord) -> String {
        "\(base)/hls/\(session.id)/\(session.playbackKey)/\(channel.directoryName)/index.m3u8"
    }
}

/// The base of the URLs in responses: the configured public URL, else the
/// request's own Host (so `--port 0` and proxies work), else host:port.
struct URLResolver: Sendable {
    var configured: String?
    var fallbackHost: String
    var fallbackPort: Int

    func urls(for request: Request) -> EndpointURLs {
        if let configured { return EndpointURLs(base: String(configured.reversed().drop { $0 == "/" }.reversed())) }
        if let authority = request.head.authority, Self.isPlainAuthority(authority) {
            return EndpointURLs(base: "http://" + authority)
        }
        return EndpointURLs(base: "http://\(fallbackHost):\(fallbackPort)")
    }

    /// host, host:port, [v6]:port; nothing that could bend a URL.
    static func isPlainAuthority(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 255 && text.utf8.allSatisfy {
            ($0 >= 0x30 && $0 <= 0x3a) || ($0 >= 0x41 && $0 <= 0x5a) || ($0 >= 0x61 && $0 <= 0x7a)
                || $0 == 0x2d || $0 == 0x2e || $0 == 0x5b || $0 == 0x5d
        }
    }
}

import Hummingbird

/// `POST /capture/webhook/secret`'s answer.
struct WebhookSecretResource: Encodable {
    var secret: String
    var generation: Int
    /// Until then the secret before this one signs too.
    var previousValidUntil: String?

    enum CodingKeys: String, CodingKey {
        case secret, generation, previousValidUntil = "previous_valid_until"
    }
}
