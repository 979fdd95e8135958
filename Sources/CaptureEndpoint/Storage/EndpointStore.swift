public import CaptureUplink

/// A status change that backends hear about: by webhook (if the session has a
/// `callback_url`) and on the event WebSocket.
public enum SessionEventType: String, Codable, Sendable, CaseIterable {
    case active = "capture_session.active"
    case stopped = "capture_session.stopped"
    case exported = "capture_session.exported"
    case failed = "capture_session.failed"
}

/// What a store operation changed, for the caller to announce after the commit.
public struct SessionTransition: Sendable, Equatable {
    public var event: SessionEventType
    /// The session as committed with the change.
    public var session: SessionRecord
}

/// The answer to an uplink hello.
public enum UplinkOpening: Sendable, Equatable {
    case opened(session: SessionRecord, channels: [ChannelRecord])
    case notFound
    case closed(SessionStatus)
    case channelMismatch(String)
    /// Another token of the account streams the session and is still valid.
    case streamedByAnotherToken
}

/// What happened to one chunk.
public enum ChunkOutcome: Sendable, Equatable {
    /// Stored now; `transitions` holds the session becoming active, if it did.
    case stored(ChannelRecord, transitions: [SessionTransition])
    /// Stored before with the same bytes: acknowledge again.
    case duplicate
    /// Stored before with other bytes.
    case conflict(storedSHA256: String)
    /// An earlier seq is missing.
    case gap(expected: Int)
    case unknownChannel
    case channelComplete
    case sessionClosed(SessionStatus)
    /// The channel's chunks would last longer than `UplinkProtocol.maxTimelineNs` in all.
    case timelineFull(storedNs: Int64)
    /// A quota of the session or the account would be exceeded (which, in words).
    case quotaExceeded(String)
}

/// What one session and one account may store (`EndpointLimits`), checked in the chunk's transaction.
public struct StorageQuota: Sendable, Equatable {
    public var bytesPerSession: Int64
    public var chunksPerSession: Int
    public var bytesPerAccount: Int64

    public init(_ limits: EndpointLimits) {
        bytesPerSession = limits.bytesPerSession
        chunksPerSession = limits.chunksPerSession
        bytesPerAccount = limits.bytesPerAccount
    }
}

/// A webhook delivery that is due, and the account whose session it is for (deliveries are
/// limited per account, so one account's slow receivers delay only its own).
public struct DueWebhook: Sendable, Equatable {
    public var delivery: WebhookDeliveryRecord
    public var accountId: String
}

/// The answer to `end`.
public enum StreamEnding: Sendable, Equatable {
    case stopped([ChannelRecord], transitions: [SessionTransition])
    case incomplete([ChannelRecord])
    case sessionClosed(SessionStatus, [ChannelRecord])
}

/// What a client token may do: upload to its account's sessions, until it expires or is revoked.
public enum TokenCheck: Sendable, Equatable {
    case valid(TokenRecord)
    case unknown
    case expired
    case revoked
}

/// The endpoint's state: sessions, channels, the chunk index, tokens and the
/// webhook outbox. Chunk bytes live in files beside it (`ChunkFiles`); a chunk
/// is indexed only after its file is durable.
///
/// Every method is one transaction, so a SIGKILL between two leaves a
/// consistent state.
public protocol EndpointStore: Sendable {
    // Sessions (REST)
    /// Creates the session unless its account already has `maxOpen` sessions created, starting
    /// or active; returns whether it did.
    func createSession(_ session: SessionRecord, maxOpen: Int) async throws -> Bool
    func session(id: String) async throws -> SessionRecord?
    func sessions(accountId: String, collectionId: String, status: SessionStatus?) async throws -> [SessionRecord]
    func channels(sessionId: String) async throws -> [ChannelRecord]

    // Tokens
    func insertToken(_ token: TokenRecord) async throws
    func checkToken(hash: String, now: Int64) async throws -> TokenCheck
    /// Revokes the token with this hash if it is the account's; returns whether it was.
    func revokeToken(hash: String, accountId: String, now: Int64) async throws -> Bool

    // Uplink
    /// A hello for `sessionId` with `token`: the first makes the token the session's streaming
    /// token and stores the channels; a later one must name the same channels and come with
    /// that token (or a valid one once that token has expired or was revoked). Moves `created`
    /// to `starting`.
    func openUplink(sessionId: String, token: TokenRecord, channels: [UplinkChannel], now: Int64) async throws
        -> UplinkOpening
    /// Indexes a chunk whose file is already durable at `file`, within `quota`.
    func storeChunk(sessionId: String, header: UplinkChunkHeader, file: String, quota: StorageQuota, now: Int64)
        async throws -> ChunkOutcome
    /// The seq-th chunk as stored, if it is.
    func chunk(sessionId: String, channelId: String, seq: Int) async throws -> ChunkRecord?
    func chunks(sessionId: String, channelId: String) async throws -> [ChunkRecord]
    /// `end`: stops the session when every channel's final chunk is stored. `interrupted`:
    /// the client's capture died; each channel without a final chunk closes at what is stored.
    func endStream(sessionId: String, interrupted: Bool, now: Int64) async throws -> StreamEnding
    /// Marks these sessions' uplinks as heard from now (they have a live connection).
    func touchUplink(sessionIds: [String], now: Int64) async throws
    /// Fails every starting or active session whose uplink has been silent since before
    /// `silentSince`, and every session still `created` since before `unstartedSince`.
    func failSilentSessions(silentSince: Int64, unstartedSince: Int64, now: Int64) async throws -> [SessionTransition]

    // Export
    /// Marks the session exporting (if it is stopped and not exported or exporting yet, and
    /// a failed export has attempts left: `SessionRecord.maxExportAttempts`); returns the
    /// session as it is after the call.
    func beginExport(sessionId: String, videoChannelId: String, now: Int64) async throws -> SessionRecord?
    func finishExport(sessionId: String, videoId: String?, error: String?, now: Int64) async throws
        -> [SessionTransition]
    /// Sessions left `exporting` (a crash interrupted their export).
    func sessionsExporting() async throws -> [SessionRecord]

    /// Counts one more attempt of an export a crash interrupted and returns the session to
    /// export again; nil (and the export failed for good) once it has had its attempts.
    func restartInterruptedExport(sessionId: String, now: Int64) async throws -> SessionRecord?

    // Webhook secrets
    /// The account's secret generation, nil while it has never been rotated (generation 0).
    func webhookSecret(accountId: String) async throws -> WebhookSecretRecord?
    /// Moves the account to its next generation; the one before keeps signing until `previousUntil`.
    func rotateWebhookSecret(accountId: String, now: Int64, previousUntil: Int64) async throws -> WebhookSecretRecord

    // Webhook outbox
    /// Deliveries due now, the oldest pending one per session, with the account each is for.
    func dueWebhooks(now: Int64, limit: Int) async throws -> [DueWebhook]
    func webhookAttempted(id: String, status: Int?, error: String?, delivered: Bool, nextAttemptAt: Int64?,
                          now: Int64) async throws
    func webhooks(sessionId: String) async throws -> [WebhookDeliveryRecord]
}
