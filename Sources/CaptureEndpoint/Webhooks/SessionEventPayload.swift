import CaptureCore
import Foundation

/// The `data` of a session event, the same in a webhook body and on the event
/// WebSocket.
public struct SessionEventData: Codable, Sendable, Equatable {
    public var captureSessionId: String
    public var collectionId: String
    public var endUserId: String
    public var clientId: String?
    public var status: SessionStatus
    public var exportStatus: ExportStatus?
    public var exportedVideoId: String?
    public var failureReason: String?

    public init(_ session: SessionRecord) {
        captureSessionId = session.id
        collectionId = session.collectionId
        endUserId = session.endUserId
        clientId = session.clientId
        status = session.status
        exportStatus = session.exportStatus
        exportedVideoId = session.exportedVideoId
        failureReason = session.failureReason
    }

    enum CodingKeys: String, CodingKey {
        case captureSessionId = "capture_session_id", collectionId = "collection_id", endUserId = "end_user_id"
        case clientId = "client_id", status, exportStatus = "export_status", exportedVideoId = "exported_video_id"
        case failureReason = "failure_reason"
    }
}

/// A webhook's body (Standard Webhooks' recommended shape: `type`, `timestamp`,
/// `data`), with `capture_session_id` at the top as VideoDB's hooks carry it.
public struct WebhookBody: Codable, Sendable, Equatable {
    public var type: SessionEventType
    public var timestamp: String
    public var captureSessionId: String
    public var data: SessionEventData

    public init(event: SessionEventType, session: SessionRecord, atMilliseconds: Int64) {
        type = event
        timestamp = WallClock.iso8601(nanoseconds: atMilliseconds * 1_000_000)
        captureSessionId = session.id
        data = SessionEventData(session)
    }

    enum CodingKeys: String, CodingKey {
        case type, timestamp, captureSessionId = "capture_session_id", data
    }

    /// The exact text that is sent and signed.
    public var json: String {
        JSONCoding.text(self)
    }
}

/// A message on the event WebSocket: `{"channel": "capture_session", "event": ..., "data": {...}}`.
public struct EventSocketMessage: Codable, Sendable, Equatable {
    public var channel: String
    public var event: SessionEventType
    public var data: SessionEventData

    public init(_ transition: SessionTransition) {
        channel = "capture_session"
        event = transition.event
        data = SessionEventData(transition.session)
    }

    public var json: String {
        JSONCoding.text(self)
    }
}
