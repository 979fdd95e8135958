import GRDB

/// The schema, one migration per change; `DatabaseMigrator` records which ran.
/// Never edit a migration that has shipped: add the next one.
enum EndpointMigrations {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: sessions, channels, chunks, tokens, webhook outbox") { db in
            try db.create(table: "sessions") { t in
                t.primaryKey("id", .text)
                t.column("account_id", .text).notNull()
                t.column("collection_id", .text).notNull()
                t.column("end_user_id", .text).notNull()
                t.column("client_id", .text)
                t.column("status", .text).notNull()
                t.column("callback_url", .text)
                t.column("ws_connection_id", .text)
                t.column("metadata_json", .text).notNull()
                t.column("primary_video_channel_id", .text)
                t.column("export_status", .text)
                t.column("exported_video_id", .text)
                t.column("export_error", .text)
                t.column("failure_reason", .text)
                t.column("created_at", .integer).notNull()
                t.column("updated_at", .integer).notNull()
                t.column("started_at", .integer)
                t.column("active_at", .integer)
                t.column("stopped_at", .integer)
                t.column("last_uplink_at", .integer)
                t.column("playback_key", .text).notNull()
            }
            try db.create(index: "sessions_by_account", on: "sessions", columns: ["account_id", "collection_id", "created_at"])
            try db.create(index: "sessions_by_status", on: "sessions", columns: ["status", "last_uplink_at"])

            try db.create(table: "channels") { t in
                t.column("session_id", .text).notNull().references("sessions", onDelete: .cascade)
                t.column("channel_id", .text).notNull()
                t.column("position", .integer).notNull()
                t.column("media_type", .text).notNull()
                t.column("codec", .text).notNull()
                t.column("name", .text)
                t.column("is_primary", .boolean).notNull()
                t.column("chunk_duration_ns", .integer).notNull()
                t.column("width", .integer)
                t.column("height", .integer)
                t.column("frame_rate", .integer)
                t.column("sample_rate", .integer)
                t.column("audio_channels", .integer)
                t.column("next_seq", .integer).notNull()
                t.column("complete", .boolean).notNull()
                t.column("stored_bytes", .integer).notNull()
                t.column("stored_duration_ns", .integer).notNull()
                t.primaryKey(["session_id", "channel_id"])
            }

            try db.create(table: "chunks") { t in
                t.column("session_id", .text).notNull()
                t.column("channel_id", .text).notNull()
                t.column("seq", .integer).notNull()
                t.column("start_pts_ns", .integer).notNull()
                t.column("duration_ns", .integer).notNull()
                t.column("frames", .integer).notNull()
                t.column("bytes", .integer).notNull()
                t.column("sha256", .text).notNull()
                t.column("capture_time_unix_ns", .integer).notNull()
                t.column("is_final", .boolean).notNull()
                t.column("file", .text).notNull()
                t.column("stored_at", .integer).notNull()
                // Exactly once: a second insert of the same chunk is a constraint violation.
                t.primaryKey(["session_id", "channel_id", "seq"])
                t.foreignKey(["session_id", "channel_id"], references: "channels", onDelete: .cascade)
            }

            try db.create(table: "tokens") { t in
                t.primaryKey("id", .text)
                t.column("account_id", .text).notNull()
                t.column("hash", .text).notNull().unique()
                t.column("created_at", .integer).notNull()
                t.column("expires_at", .integer).notNull()
                t.column("revoked_at", .integer)
            }

            try db.create(table: "webhook_deliveries") { t in
                t.primaryKey("id", .text)
                t.column("session_id", .text).notNull()
                t.column("url", .text).notNull()
                t.column("event_type", .text).notNull()
                t.column("payload", .text).notNull()
                t.column("created_at", .integer).notNull()
                t.column("attempts", .integer).notNull()
                t.column("next_attempt_at", .integer).notNull()
                t.column("delivered_at", .integer)
                t.column("abandoned_at", .integer)
                t.column("last_status", .integer)
                t.column("last_error", .text)
            }
            try db.create(index: "webhooks_due", on: "webhook_deliveries", columns: ["delivered_at", "abandoned_at", "next_attempt_at"])
        }
        migrator.registerMigration("v2: export attempts") { db in
            try db.alter(table: "sessions") { t in
                t.add(column: "export_attempts", .integer).notNull().defaults(to: 0)
            }
        }
        migrator.registerMigration("v3: the streaming token, account usage, webhook secrets per account") { db in
            try db.alter(table: "sessions") { t in
                // The hash of the token that streams the session (the first hello's), nil before.
                t.add(column: "stream_token_hash", .text)
            }
            try db.create(table: "account_usage") { t in
                t.primaryKey("account_id", .text)
                t.column("stored_bytes", .integer).notNull()
                t.column("stored_chunks", .integer).notNull()
            }
            try db.execute(sql: """
                INSERT INTO account_usage (account_id, stored_bytes, stored_chunks)
                SELECT s.account_id, SUM(c.stored_bytes), SUM(c.next_seq)
                FROM channels c JOIN sessions s ON s.id = c.session_id GROUP BY s.account_id
                """)
            // An account's webhook secret is derived from the endpoint's signing key, the
            // account and this generation (`WebhookSecrets`): no secret is stored here.
            try db.create(table: "webhook_secrets") { t in
                t.primaryKey("account_id", .text)
                t.column("generation", .integer).notNull()
                t.column("rotated_at", .integer).notNull()
                // The generation before the last rotation signs too until then (ms).
                t.column("previous_until", .integer)
            }
        }
        return migrator
    }
}
