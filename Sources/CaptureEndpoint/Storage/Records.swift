public import CaptureCore
public import CaptureUplink
public import GRDB

/// A capture session's life: created by the backend, starting once an uplink
/// said hello, active once every channel delivered a first chunk, stopped when
/// the uplink ended the stream with every chunk in, exported after an export;
/// failed when an active (or starting) session heard nothing for too long.
public enum SessionStatus: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case created, starting, active, stopped, exported, failed

    /// No more chunks are accepted.
    public var isClosed: Bool { self == .stopped || self == .exported || self == .failed }
}

public enum ExportStatus: String, Codable, Sendable, CaseIterable, DatabaseValueConvertible {
    case exporting, exported, failed
}

/// One row of `sessions`.
public struct SessionRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "sessions"

    public var id: String
    public var accountId: String
    public var collectionId: String
    public var endUserId: String
    public var clientId: String?
    public var status: SessionStatus
    public var callbackURL: String?
    public var wsConnectionId: String?
    /// The backend's metadata object, as compact JSON text.
    public var metadataJSON: String
    public var primaryVideoChannelId: String?
    public var exportStatus: ExportStatus?
    public var exportedVideoId: String?
    public var exportError: String?
    public var failureReason: String?
    /// Unix milliseconds.
    public var createdAt: Int64
    public var updatedAt: Int64
    public var startedAt: Int64?
    public var activeAt: Int64?
    public var stoppedAt: Int64?
    /// When the uplink last delivered anything (hello or chunk): the idle check's clock.
    public var lastUplinkAt: Int64?
    /// The random path segment of the session's playback URLs (HLS, export): a
    /// read-only capability a player can use without the API key.
    public var playbackKey: String
    /// Exports started for the session (a request, or a restart after a crash): a failing
    /// export is started again only while this is under `SessionRecord.maxExportAttempts`.
    public var exportAttempts: Int = 0
    /// The hash of the client token that streams the session: set by the first accepted
    /// hello; another token's hello is refused while this one is valid.
    public var streamTokenHash: String?

    /// Exports tried before a failure is final (POST .../export then answers `failed`).
    public static let maxExportAttempts = 3

    enum CodingKeys: String, CodingKey {
        case id, accountId = "account_id", collectionId = "collection_id", endUserId = "end_user_id"
        case clientId = "client_id", status, callbackURL = "callback_url", wsConnectionId = "ws_connection_id"
        case metadataJSON = "metadata_json", primaryVideoChannelId = "primary_video_channel_id"
        case exportStatus = "export_status", exportedVideoId = "exported_video_id", exportError = "export_error"
        case failureReason = "failure_reason", createdAt = "created_at", updatedAt = "updated_at"
        case startedAt = "started_at", activeAt = "active_at", stoppedAt = "stopped_at"
        case lastUplinkAt = "last_uplink_at", playbackKey = "playback_key", exportAttempts = "export_attempts"
        case streamTokenHash = "stream_token_hash"
    }
}

/// One row of `channels`: a channel the session's hello named.
public struct ChannelRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "channels"

    public var sessionId: String
    public var channelId: String
    /// Order in the hello; also the channel's directory (`c<position>`), so no
    /// client-chosen text ever becomes a path.
    public var position: Int
    public var mediaType: MediaType
    public var codec: String
    public var name: String?
    public var isPrimary: Bool
    public var chunkDurationNs: Int64
    public var width: Int?
    public var height: Int?
    public var frameRate: Int?
    public var sampleRate: Int?
    public var audioChannels: Int?
    /// Every seq below it is stored.
    public var nextSeq: Int
    /// The final chunk is stored.
    public var complete: Bool
    public var storedBytes: Int64
    /// Length of the stored chunks on the session timeline, ns.
    public var storedDurationNs: Int64

    enum CodingKeys: String, CodingKey {
        case sessionId = "session_id", channelId = "channel_id", position, mediaType = "media_type", codec, name
        case isPrimary = "is_primary", chunkDurationNs = "chunk_duration_ns", width, height
        case frameRate = "frame_rate", sampleRate = "sample_rate", audioChannels = "audio_channels"
        case nextSeq = "next_seq", complete, storedBytes = "stored_bytes", storedDurationNs = "stored_duration_ns"
    }

    public var directoryName: String { "c\(position)" }

    /// `screen`, `mic` or `system_audio`: the category the VideoDB SDK filters rtstreams by.
    public var category: String {
        (try? ChannelID(parsing: channelId))?.trackName ?? mediaType.rawValue
    }

    public var progress: UplinkChannelProgress {
        UplinkChannelProgress(channelId: channelId, nextSeq: nextSeq, complete: complete)
    }
}

extension MediaType: DatabaseValueConvertible {}

/// One row of `chunks`: a stored chunk, exactly once per (session, channel, seq).
public struct ChunkRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "chunks"

    public var sessionId: String
    public var channelId: String
    public var seq: Int
    public var startPtsNs: Int64
    public var durationNs: Int64
    public var frames: Int
    public var bytes: Int
    public var sha256: String
    public var captureTimeUnixNs: Int64
    public var isFinal: Bool
    /// Path relative to the data directory.
    public var file: String
    public var storedAt: Int64

    enum CodingKeys: String, CodingKey {
        case sessionId = "session_id", channelId = "channel_id", seq, startPtsNs = "start_pts_ns"
        case durationNs = "duration_ns", frames, bytes, sha256, captureTimeUnixNs = "capture_time_unix_ns"
        case isFinal = "is_final", file, storedAt = "stored_at"
    }
}

/// One row of `webhook_secrets`: which generation of its webhook secret an account is at.
/// An account without a row is at generation 0, a secret nobody has been shown.
public struct WebhookSecretRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "webhook_secrets"

    public var accountId: String
    public var generation: Int
    public var rotatedAt: Int64
    /// Until then (Unix ms) the previous generation signs too.
    public var previousUntil: Int64?

    enum CodingKeys: String, CodingKey {
        case accountId = "account_id", generation, rotatedAt = "rotated_at", previousUntil = "previous_until"
    }
}

/// One row of `tokens`. The token itself is never stored: only its SHA-256.
public struct TokenRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "tokens"

    public var id: String
    public var accountId: String
    public var hash: String
    public var createdAt: Int64
    public var expiresAt: Int64
    public var revokedAt: Int64?

    enum CodingKeys: String, CodingKey {
        case id, accountId = "account_id", hash, createdAt = "created_at", expiresAt = "expires_at"
        case revokedAt = "revoked_at"
    }
}

/// One row of `webhook_deliveries`: the outbox. A status change writes its
/// delivery in the same transaction, so a restart never loses one.
public struct WebhookDeliveryRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "webhook_deliveries"

    /// The Standard Webhooks `webhook-id` (`msg_...`), the same on every retry.
    public var id: String
    public var sessionId: String
    public var url: String
    public var eventType: String
    /// The exact body, signed as is.
    public var payload: String
    public var createdAt: Int64
    public var attempts: Int
    public var nextAttemptAt: Int64
    public var deliveredAt: Int64?
    /// Given up after the last attempt.
    public var abandonedAt: Int64?
    public var lastStatus: Int?
    public var lastError: String?

    enum CodingKeys: String, CodingKey {
        case id, sessionId = "session_id", url, eventType = "event_type", payload, createdAt = "created_at"
        case attempts, nextAttemptAt = "next_attempt_at", deliveredAt = "delivered_at"
        case abandonedAt = "abandoned_at", lastStatus = "last_status", lastError = "last_error"
    }
}
