import CaptureCore
public import CaptureUplink
import Foundation
import GRDB

/// `EndpointStore` on SQLite through GRDB: one database file in WAL mode with
/// `synchronous = FULL`, so a committed transaction survives a SIGKILL and a
/// power cut. Writes are serialized by GRDB's writer; reads run beside them.
public final class SQLiteEndpointStore: EndpointStore {
    private let pool: DatabasePool

    /// Opens (creating as needed) the database at `path` and runs the migrations.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        try EndpointMigrations.migrator.migrate(pool)
    }

    /// The migrations this database has run, oldest first.
    public func appliedMigrations() async throws -> [String] {
        try await pool.read { db in try EndpointMigrations.migrator.appliedMigrations(db) }
    }

    // MARK: Sessions

    public func createSession(_ session: SessionRecord, maxOpen: Int) async throws -> Bool {
        try await pool.write { db in
            let open = try SessionRecord
                .filter(Column("account_id") == session.accountId)
                .filter([SessionStatus.created.rawValue, SessionStatus.starting.rawValue, SessionStatus.active.rawValue]
                    .contains(Column("status")))
                .fetchCount(db)
            guard open < maxOpen else { return false }
            try session.insert(db)
            return true
        }
    }

    public func session(id: String) async throws -> SessionRecord? {
        try await pool.read { db in try SessionRecord.fetchOne(db, key: id) }
    }

    public func sessions(accountId: String, collectionId: String, status: SessionStatus?) async throws -> [SessionRecord] {
        try await pool.read { db in
            var request = SessionRecord
                .filter(Column("account_id") == accountId && Column("collection_id") == collectionId)
            if let status { request = request.filter(Column("status") == status.rawValue) }
            return try request.order(Column("created_at").desc, Column("id")).fetchAll(db)
        }
    }

    public func channels(sessionId: String) async throws -> [ChannelRecord] {
        try await pool.read { db in try Self.channels(db, sessionId) }
    }

    private static func channels(_ db: Database, _ sessionId: String) throws -> [ChannelRecord] {
        try ChannelRecord.filter(Column("session_id") == sessionId).order(Column("position")).fetchAll(db)
    }

    // MARK: Tokens

    public func insertToken(_ token: TokenRecord) async throws {
        try await pool.write { db in try token.insert(db) }
    }

    public func checkToken(hash: String, now: Int64) async throws -> TokenCheck {
        try await pool.read { db in
            guard let token = try TokenRecord.filter(Column("hash") == hash).fetchOne(db) else { return .unknown }
            if token.revokedAt != nil { return .revoked }
            if token.expiresAt <= now { return .expired }
            return .valid(token)
        }
    }

    public func revokeToken(hash: String, accountId: String, now: Int64) async throws -> Bool {
        try await pool.write { db in
            guard var token = try TokenRecord.filter(Column("hash") == hash).fetchOne(db),
                  token.accountId == accountId else { return false }
            if token.revokedAt == nil {
                token.revokedAt = now
                try token.update(db)
            }
            return true
        }
    }

    // MARK: Uplink

    public func openUplink(sessionId: String, token: TokenRecord, channels: [UplinkChannel], now: Int64) async throws
        -> UplinkOpening {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId), session.accountId == token.accountId else {
                return .notFound
            }
            if session.status.isClosed { return .closed(session.status) }
            if let owner = session.streamTokenHash, owner != token.hash {
                // Another token streams it: it may take over only once that token is no longer
                // valid (expired or revoked), which is how a backend rotates a client's token.
                let ownerToken = try TokenRecord.filter(Column("hash") == owner).fetchOne(db)
                if let ownerToken, ownerToken.revokedAt == nil, ownerToken.expiresAt > now {
                    return .streamedByAnotherToken
                }
            }
            session.streamTokenHash = token.hash
            var stored = try Self.channels(db, sessionId)
            if stored.isEmpty {
                let primary = channels.first { $0.mediaType == .video && $0.isPrimary == true }?.channelId
                    ?? channels.first { $0.mediaType == .video }?.channelId
                for (position, channel) in channels.enumerated() {
                    let record = ChannelRecord(
                        sessionId: sessionId, channelId: channel.channelId, position: position,
                        mediaType: channel.mediaType, codec: channel.codec, name: channel.name,
                        isPrimary: channel.channelId == primary, chunkDurationNs: channel.chunkDurationNs,
                        width: channel.width, height: channel.height, frameRate: channel.frameRate,
                        sampleRate: channel.sampleRate, audioChannels: channel.audioChannels,
                        nextSeq: 0, complete: false, storedBytes: 0, storedDurationNs: 0)
                    try record.insert(db)
                    stored.append(record)
                }
                session.primaryVideoChannelId = primary
            } else {
                let had = stored.map { "\($0.channelId)/\($0.mediaType.rawValue)/\($0.codec)" }.sorted()
                let has = channels.map { "\($0.channelId)/\($0.mediaType.rawValue)/\($0.codec)" }.sorted()
                if had != has {
                    return .channelMismatch(
                        "the session's channels are \(stored.map(\.channelId).joined(separator: ", ")); this hello names \(channels.map(\.channelId).joined(separator: ", "))")
                }
            }
            if session.status == .created {
                session.status = .starting
                session.startedAt = now
            }
            session.lastUplinkAt = now
            session.updatedAt = now
            try session.update(db)
            return .opened(session: session, channels: stored)
        }
    }

    public func storeChunk(sessionId: String, header: UplinkChunkHeader, file: String, quota: StorageQuota, now: Int64)
        async throws -> ChunkOutcome {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId) else { return .sessionClosed(.failed) }
            guard var channel = try ChannelRecord.fetchOne(
                db, key: ["session_id": sessionId, "channel_id": header.channelId]) else { return .unknownChannel }
            if header.seq < channel.nextSeq {
                let stored = try ChunkRecord.fetchOne(
                    db, key: ["session_id": sessionId, "channel_id": header.channelId, "seq": header.seq])
                guard let stored else { return .gap(expected: channel.nextSeq) }  // cannot happen: no gaps are stored
                return stored.sha256 == header.sha256 ? .duplicate : .conflict(storedSHA256: stored.sha256)
            }
            if session.status.isClosed { return .sessionClosed(session.status) }
            if channel.complete { return .channelComplete }
            if header.seq > channel.nextSeq { return .gap(expected: channel.nextSeq) }
            // Both are at most maxTimelineNs (the frame's checks and this one): no overflow.
            if channel.storedDurationNs + header.durationNs > UplinkProtocol.maxTimelineNs {
                return .timelineFull(storedNs: channel.storedDurationNs)
            }
            // Quotas: the sums are at most the quotas (checked before every insert), and a
            // chunk is at most maxChunkBytes, so none of this overflows.
            let totals = try Row.fetchOne(db, sql: """
                SELECT COALESCE(SUM(stored_bytes), 0) AS bytes, COALESCE(SUM(next_seq), 0) AS chunks
                FROM channels WHERE session_id = ?
                """, arguments: [sessionId])
            let sessionBytes: Int64 = totals?["bytes"] ?? 0
            let sessionChunks: Int = totals?["chunks"] ?? 0
            if sessionBytes + Int64(header.bytes) > quota.bytesPerSession {
                return .quotaExceeded("the session stores \(sessionBytes) bytes; its quota is \(quota.bytesPerSession)")
            }
            if sessionChunks + 1 > quota.chunksPerSession {
                return .quotaExceeded("the session stores \(sessionChunks) chunks; its quota is \(quota.chunksPerSession)")
            }
            let accountBytes = try Int64.fetchOne(
                db, sql: "SELECT stored_bytes FROM account_usage WHERE account_id = ?", arguments: [session.accountId]) ?? 0
            if accountBytes + Int64(header.bytes) > quota.bytesPerAccount {
                return .quotaExceeded("the account stores \(accountBytes) bytes; its quota is \(quota.bytesPerAccount)")
            }
            try db.execute(sql: """
                INSERT INTO account_usage (account_id, stored_bytes, stored_chunks) VALUES (?, ?, 1)
                ON CONFLICT(account_id) DO UPDATE SET stored_bytes = stored_bytes + excluded.stored_bytes,
                                                      stored_chunks = stored_chunks + 1
                """, arguments: [session.accountId, Int64(header.bytes)])

            try ChunkRecord(
                sessionId: sessionId, channelId: header.channelId, seq: header.seq, startPtsNs: header.startPtsNs,
                durationNs: header.durationNs, frames: header.frames, bytes: header.bytes, sha256: header.sha256,
                captureTimeUnixNs: header.captureTimeUnixNs, isFinal: header.isFinal, file: file, storedAt: now
            ).insert(db)
            channel.nextSeq += 1
            channel.storedBytes += Int64(header.bytes)
            channel.storedDurationNs += header.durationNs
            if header.isFinal { channel.complete = true }
            try channel.update(db)

            // The session row changes only when the session does: while the uplink is
            // connected, Housekeeping keeps `last_uplink_at` fresh once a second.
            var transitions: [SessionTransition] = []
            if session.status == .starting {
                let waiting = try ChannelRecord
                    .filter(Column("session_id") == sessionId && Column("next_seq") == 0).fetchCount(db)
                if waiting == 0 {
                    session.status = .active
                    session.activeAt = now
                    session.lastUplinkAt = now
                    session.updatedAt = now
                    try session.update(db)
                    transitions.append(try Self.announce(.active, session, db, now))
                }
            }
            return .stored(channel, transitions: transitions)
        }
    }

    public func chunk(sessionId: String, channelId: String, seq: Int) async throws -> ChunkRecord? {
        try await pool.read { db in
            try ChunkRecord.fetchOne(db, key: ["session_id": sessionId, "channel_id": channelId, "seq": seq])
        }
    }

    public func chunks(sessionId: String, channelId: String) async throws -> [ChunkRecord] {
        try await pool.read { db in
            try ChunkRecord.filter(Column("session_id") == sessionId && Column("channel_id") == channelId)
                .order(Column("seq")).fetchAll(db)
        }
    }

    public func endStream(sessionId: String, interrupted: Bool, now: Int64) async throws -> StreamEnding {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId) else {
                return .sessionClosed(.failed, [])
            }
            var channels = try Self.channels(db, sessionId)
            switch session.status {
            case .stopped, .exported: return .stopped(channels, transitions: [])  // an `end` resent after a reconnect
            case .failed: return .sessionClosed(.failed, channels)
            case .created, .starting, .active: break
            }
            if interrupted {
                for i in channels.indices where !channels[i].complete {
                    channels[i].complete = true
                    try channels[i].update(db)
                }
            }
            guard !channels.isEmpty, channels.allSatisfy(\.complete) else { return .incomplete(channels) }
            session.status = .stopped
            session.stoppedAt = now
            session.lastUplinkAt = now
            session.updatedAt = now
            try session.update(db)
            return .stopped(channels, transitions: [try Self.announce(.stopped, session, db, now)])
        }
    }

    public func failSilentSessions(silentSince: Int64, unstartedSince: Int64, now: Int64) async throws
        -> [SessionTransition] {
        try await pool.write { db in
            let silent = try SessionRecord
                .filter([SessionStatus.starting.rawValue, SessionStatus.active.rawValue].contains(Column("status")))
                .filter(Column("last_uplink_at") < silentSince)
                .fetchAll(db)
            let unstarted = try SessionRecord
                .filter(Column("status") == SessionStatus.created.rawValue)
                .filter(Column("created_at") < unstartedSince)
                .fetchAll(db)
            var transitions: [SessionTransition] = []
            for var session in silent + unstarted {
                session.failureReason = session.status == .created
                    ? "no uplink within \((now - session.createdAt + 500) / 1000) s of its creation"
                    : "the uplink was silent for \(((now - (session.lastUplinkAt ?? now)) + 500) / 1000) s"
                session.status = .failed
                session.updatedAt = now
                try session.update(db)
                transitions.append(try Self.announce(.failed, session, db, now))
            }
            return transitions
        }
    }

    /// Keeps the sessions with a live uplink from looking silent.
    public func touchUplink(sessionIds: [String], now: Int64) async throws {
        guard !sessionIds.isEmpty else { return }
        try await pool.write { db in
            _ = try SessionRecord.filter(sessionIds.contains(Column("id")))
                .updateAll(db, Column("last_uplink_at").set(to: now))
        }
    }

    // MARK: Export

    public func beginExport(sessionId: String, videoChannelId: String, now: Int64) async throws -> SessionRecord? {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId) else { return nil }
            guard session.status == .stopped || session.status == .exported else { return session }
            if session.exportStatus == .exporting || session.exportStatus == .exported { return session }
            // A failure is final after a few attempts: an export that fails on what the
            // client sent would fail again, at full cost, on every poll.
            if session.exportStatus == .failed && session.exportAttempts >= SessionRecord.maxExportAttempts { return session }
            session.exportStatus = .exporting
            session.exportError = nil
            session.exportAttempts += 1
            session.updatedAt = now
            try session.update(db)
            return session
        }
    }

    public func finishExport(sessionId: String, videoId: String?, error: String?, now: Int64) async throws
        -> [SessionTransition] {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId) else { return [] }
            session.updatedAt = now
            if let videoId {
                session.exportStatus = .exported
                session.exportedVideoId = videoId
                session.status = .exported
                try session.update(db)
                return [try Self.announce(.exported, session, db, now)]
            }
            session.exportStatus = .failed
            session.exportError = error
            try session.update(db)
            return []
        }
    }

    public func sessionsExporting() async throws -> [SessionRecord] {
        try await pool.read { db in
            try SessionRecord.filter(Column("export_status") == ExportStatus.exporting.rawValue).fetchAll(db)
        }
    }

    public func restartInterruptedExport(sessionId: String, now: Int64) async throws -> SessionRecord? {
        try await pool.write { db in
            guard var session = try SessionRecord.fetchOne(db, key: sessionId), session.exportStatus == .exporting else { return nil }
            session.updatedAt = now
            if session.exportAttempts >= SessionRecord.maxExportAttempts {
                // The endpoint died during every attempt (an export that takes it down would
                // otherwise take it down again at every start).
                session.exportStatus = .failed
                session.exportError = "the endpoint stopped during each of \(session.exportAttempts) attempts to export this session; not tried again"
                try session.update(db)
                return nil
            }
            session.exportAttempts += 1
            try session.update(db)
            return session
        }
    }

    // MARK: Webhook outbox

    /// Records a transition and, if the session has a callback URL, its webhook delivery.
    private static func announce(_ event: SessionEventType, _ session: SessionRecord, _ db: Database, _ now: Int64) throws
        -> SessionTransition {
        if let url = session.callbackURL {
            try WebhookDeliveryRecord(
                id: Secrets.newIdentifier(prefix: "msg_"), sessionId: session.id, url: url, eventType: event.rawValue,
                payload: WebhookBody(event: event, session: session, atMilliseconds: now).json, createdAt: now,
                attempts: 0, nextAttemptAt: now, deliveredAt: nil, abandonedAt: nil, lastStatus: nil, lastError: nil
            ).insert(db)
        }
        return SessionTransition(event: event, session: session)
    }

    public func dueWebhooks(now: Int64, limit: Int) async throws -> [DueWebhook] {
        try await pool.read { db in
            // Per session, only the oldest pending delivery may go: a session's hooks arrive in order.
            let pending = try Row.fetchAll(db, sql: """
                SELECT w.*, s.account_id AS due_account_id FROM webhook_deliveries w JOIN sessions s ON s.id = w.session_id
                WHERE w.delivered_at IS NULL AND w.abandoned_at IS NULL ORDER BY w.created_at, w.rowid
                """)
            var seen = Set<String>()
            var due: [DueWebhook] = []
            for row in pending {
                let delivery = try WebhookDeliveryRecord(row: row)
                guard seen.insert(delivery.sessionId).inserted else { continue }
                if delivery.nextAttemptAt <= now { due.append(DueWebhook(delivery: delivery, accountId: row["due_account_id"])) }
                if due.count == limit { break }
            }
            return due
        }
    }

    public func webhookSecret(accountId: String) async throws -> WebhookSecretRecord? {
        try await pool.read { db in try WebhookSecretRecord.fetchOne(db, key: accountId) }
    }

    public func rotateWebhookSecret(accountId: String, now: Int64, previousUntil: Int64) async throws -> WebhookSecretRecord {
        try await pool.write { db in
            let current = try WebhookSecretRecord.fetchOne(db, key: accountId)
            let next = WebhookSecretRecord(accountId: accountId, generation: (current?.generation ?? 0) + 1,
                                           rotatedAt: now, previousUntil: previousUntil)
            try next.save(db)
            return next
        }
    }

    public func webhookAttempted(id: String, status: Int?, error: String?, delivered: Bool, nextAttemptAt: Int64?,
                                 now: Int64) async throws {
        try await pool.write { db in
            guard var delivery = try WebhookDeliveryRecord.fetchOne(db, key: id) else { return }
            delivery.attempts += 1
            delivery.lastStatus = status
            delivery.lastError = error
            if delivered {
                delivery.deliveredAt = now
            } else if let nextAttemptAt {
                delivery.nextAttemptAt = nextAttemptAt
            } else {
                delivery.abandonedAt = now
            }
            try delivery.update(db)
        }
    }

    public func webhooks(sessionId: String) async throws -> [WebhookDeliveryRecord] {
        try await pool.read { db in
            try WebhookDeliveryRecord.filter(Column("session_id") == sessionId)
                .order(Column("created_at"), Column("rowid")).fetchAll(db)
        }
    }
}
