@testable import CaptureEndpoint
import CaptureUplink
import Foundation
import Logging
import Synchronization
import XCTest

/// The dispatcher reads the due rows in one read transaction (a WAL snapshot) while attempts
/// run beside it. A read whose snapshot was taken before an attempt recorded its outcome, and
/// that returns after the attempt ended, still shows that delivery due: the dispatcher must
/// not take it from that read (it would POST a delivered hook again with the same webhook-id,
/// which the Wayland demo's backend once received).
///
/// The interleaving is forced, not waited for: `StaleReadStore` (the real SQLite store, with
/// two methods held at a gate) lets the attempt record its outcome only after a second read has
/// taken its snapshot, and lets that read return only after the attempt has ended.
final class WebhookDispatchRaceTests: XCTestCase {
    func testAReadOlderThanAnAttemptsRecordDoesNotDeliverItAgain() async throws {
        let receiver = WebhookReceiver(failures: 0)
        try await receiver.start()
        defer { Task { await receiver.stop() } }

        let harness = EndpointHarness()
        try FileManager.default.createDirectory(atPath: harness.dataDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: harness.dataDirectory) }
        let base = try SQLiteEndpointStore(path: harness.configuration.databasePath)
        let store = StaleReadStore(base)

        // One outbox row: a session with the receiver as its callback, never started, failed
        // by the unstarted-session check.
        let now = EndpointClock.nowMilliseconds()
        let session = SessionRecord(
            id: "cap-race", accountId: "acct-race", collectionId: "default", endUserId: "user", clientId: nil,
            status: .created, callbackURL: await receiver.url, wsConnectionId: nil, metadataJSON: "{}",
            primaryVideoChannelId: nil, exportStatus: nil, exportedVideoId: nil, exportError: nil, failureReason: nil,
            createdAt: now - 10_000, updatedAt: now - 10_000, startedAt: nil, activeAt: nil, stoppedAt: nil,
            lastUplinkAt: nil, playbackKey: "race-playback-key")
        let created = try await base.createSession(session, maxOpen: 10)
        XCTAssertTrue(created)
        let failed = try await base.failSilentSessions(silentSince: now, unstartedSince: now, now: now)
        XCTAssertEqual(failed.map(\.event), [.failed])
        let outbox = try await base.webhooks(sessionId: session.id)
        XCTAssertEqual(outbox.count, 1)
        let id = try XCTUnwrap(outbox.first?.id)

        let dispatcher = WebhookDispatcher(store: store, secrets: try XCTUnwrap(WebhookSecrets(signingKey: EndpointHarness.webhookSecret)),
                                           configuration: harness.configuration, logger: EndpointHarness.logger)
        let running = Task { try await dispatcher.run() }
        dispatcher.wake()

        // The gate opened and closed in order: a read began during the attempt and returned
        // after it had ended.
        let forced = await store.raceForced.wait(upTo: .seconds(20))
        XCTAssertTrue(forced, "the dispatcher read the outbox again while the attempt was under way")
        // Reads after the race see the record: give the dispatcher a few more of them (it polls
        // every 250 ms) to POST again, which it must not.
        let readsSoFar = store.reads
        let deadline = ContinuousClock.now + .seconds(20)
        while store.reads < readsSoFar + 4 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        XCTAssertGreaterThanOrEqual(store.reads, readsSoFar + 4, "the dispatcher kept reading the outbox")
        running.cancel()
        _ = try? await running.value

        let posts = await receiver.deliveries.filter { $0.id == id }
        XCTAssertEqual(posts.count, 1, "webhook \(id) was POSTed \(posts.count) times")
        let row = try await base.webhooks(sessionId: session.id).first
        XCTAssertEqual(row?.attempts, 1, "attempts recorded for the one delivery")
        XCTAssertNotNil(row?.deliveredAt)
    }
}

/// Fires once; a wait after it fired returns at once.
private final class Signal: Sendable {
    private let fired = Mutex(false)
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() { (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1)) }

    func fire() {
        fired.withLock { $0 = true }
        continuation.yield()
        continuation.finish()
    }

    var hasFired: Bool { fired.withLock { $0 } }

    /// Whether it fired within `limit` (one waiter at a time).
    func wait(upTo limit: Duration) async -> Bool {
        if hasFired { return true }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask { [stream] in
                for await _ in stream { return true }
                return true   // finished: fired
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first || self.hasFired
        }
    }
}

/// The real store, with the one interleaving the test needs forced: the first attempt's record
/// (`webhookAttempted`) waits until a later read of the due rows has taken its snapshot, and that
/// read returns only once the attempt has ended (its record written, the dispatcher given time
/// to release it). Every other call goes straight through.
private final class StaleReadStore: EndpointStore {
    private let base: SQLiteEndpointStore
    private let readsCount = Atomic<Int>(0)
    /// A read returned a due delivery; the reads after it are the ones that can be stale.
    private let firstDue = Signal()
    private let staleSnapshotTaken = Signal()
    private let attemptRecorded = Signal()
    let raceForced = Signal()

    init(_ base: SQLiteEndpointStore) { self.base = base }

    var reads: Int { readsCount.load(ordering: .relaxed) }

    func dueWebhooks(now: Int64, limit: Int) async throws -> [DueWebhook] {
        let due = try await base.dueWebhooks(now: now, limit: limit)
        readsCount.add(1, ordering: .relaxed)
        if !firstDue.hasFired {
            if !due.isEmpty { firstDue.fire() }
            return due
        }
        guard !staleSnapshotTaken.hasFired, !due.isEmpty else { return due }
        // A read while the first attempt is under way: its snapshot still shows the delivery due.
        staleSnapshotTaken.fire()
        _ = await attemptRecorded.wait(upTo: .seconds(10))
        // The attempt returns and the dispatcher releases it right after the record.
        try? await Task.sleep(for: .milliseconds(300))
        raceForced.fire()
        return due
    }

    func webhookAttempted(id: String, status: Int?, error: String?, delivered: Bool, nextAttemptAt: Int64?,
                          now: Int64) async throws {
        let first = !attemptRecorded.hasFired
        if first { _ = await staleSnapshotTaken.wait(upTo: .seconds(10)) }
        try await base.webhookAttempted(id: id, status: status, error: error, delivered: delivered,
                                        nextAttemptAt: nextAttemptAt, now: now)
        if first { attemptRecorded.fire() }
    }

    func createSession(_ session: SessionRecord, maxOpen: Int) async throws -> Bool {
        try await base.createSession(session, maxOpen: maxOpen)
    }
    func session(id: String) async throws -> SessionRecord? { try await base.session(id: id) }
    func sessions(accountId: String, collectionId: String, status: SessionStatus?) async throws -> [SessionRecord] {
        try await base.sessions(accountId: accountId, collectionId: collectionId, status: status)
    }
    func channels(sessionId: String) async throws -> [ChannelRecord] { try await base.channels(sessionId: sessionId) }
    func insertToken(_ token: TokenRecord) async throws { try await base.insertToken(token) }
    func checkToken(hash: String, now: Int64) async throws -> TokenCheck { try await base.checkToken(hash: hash, now: now) }
    func revokeToken(hash: String, accountId: String, now: Int64) async throws -> Bool {
        try await base.revokeToken(hash: hash, accountId: accountId, now: now)
    }
    func openUplink(sessionId: String, token: TokenRecord, channels: [UplinkChannel], now: Int64) async throws
        -> UplinkOpening {
        try await base.openUplink(sessionId: sessionId, token: token, channels: channels, now: now)
    }
    func storeChunk(sessionId: String, header: UplinkChunkHeader, file: String, quota: StorageQuota, now: Int64)
        async throws -> ChunkOutcome {
        try await base.storeChunk(sessionId: sessionId, header: header, file: file, quota: quota, now: now)
    }
    func chunk(sessionId: String, channelId: String, seq: Int) async throws -> ChunkRecord? {
        try await base.chunk(sessionId: sessionId, channelId: channelId, seq: seq)
    }
    func chunks(sessionId: String, channelId: String) async throws -> [ChunkRecord] {
        try await base.chunks(sessionId: sessionId, channelId: channelId)
    }
    func endStream(sessionId: String, interrupted: Bool, now: Int64) async throws -> StreamEnding {
        try await base.endStream(sessionId: sessionId, interrupted: interrupted, now: now)
    }
    func touchUplink(sessionIds: [String], now: Int64) async throws { try await base.touchUplink(sessionIds: sessionIds, now: now) }
    func failSilentSessions(silentSince: Int64, unstartedSince: Int64, now: Int64) async throws -> [SessionTransition] {
        try await base.failSilentSessions(silentSince: silentSince, unstartedSince: unstartedSince, now: now)
    }
    func beginExport(sessionId: String, videoChannelId: String, now: Int64) async throws -> SessionRecord? {
        try await base.beginExport(sessionId: sessionId, videoChannelId: videoChannelId, now: now)
    }
    func finishExport(sessionId: String, videoId: String?, error: String?, now: Int64) async throws -> [SessionTransition] {
        try await base.finishExport(sessionId: sessionId, videoId: videoId, error: error, now: now)
    }
    func sessionsExporting() async throws -> [SessionRecord] { try await base.sessionsExporting() }
    func restartInterruptedExport(sessionId: String, now: Int64) async throws -> SessionRecord? {
        try await base.restartInterruptedExport(sessionId: sessionId, now: now)
    }
    func webhookSecret(accountId: String) async throws -> WebhookSecretRecord? { try await base.webhookSecret(accountId: accountId) }
    func rotateWebhookSecret(accountId: String, now: Int64, previousUntil: Int64) async throws -> WebhookSecretRecord {
        try await base.rotateWebhookSecret(accountId: accountId, now: now, previousUntil: previousUntil)
    }
    func webhooks(sessionId: String) async throws -> [WebhookDeliveryRecord] { try await base.webhooks(sessionId: sessionId) }
}
