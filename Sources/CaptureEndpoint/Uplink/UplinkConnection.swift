import CaptureCore
import CaptureUplink
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization
import Foundation

/// The endpoint's side of one uplink WebSocket (docs/uplink-protocol.md):
/// hello -> welcome, then chunk frames -> acks, then end -> ended. One
/// connection's messages are handled strictly in order; the store serializes
/// connections against each other.
struct UplinkConnection {
    /// What every uplink connection of the endpoint shares.
    struct Services: Sendable {
        let store: any EndpointStore
        let files: ChunkFiles
        let hub: UplinkHub
        let announcer: SessionAnnouncer
        let maxChunkBytes: Int
        let window: Int
        let quota: StorageQuota
        /// `EndpointLimits.chunksPerSecond`.
        let chunksPerSecond: Int
        /// Uplink bytes in memory, over all connections.
        let budget: InflightBudget
        /// Fault injection for tests: a pause between a hello's token check and its attach.
        var injectedHelloDelay: Duration? = nil
    }

    private let services: Services
    private let outbound: WebSocketOutboundWriter
    private let state: UplinkConnectionState
    private var logger: Logger
    private var store: any EndpointStore { services.store }
    private var files: ChunkFiles { services.files }
    private var hub: UplinkHub { services.hub }
    private var announcer: SessionAnnouncer { services.announcer }
    private var maxChunkBytes: Int { services.maxChunkBytes }
    private var window: Int { services.window }

    /// Set by the hello.
    private var session: String?
    private var tokenExpiresAt: Int64 = 0
    /// Channel id -> where it stands, as this connection last learnt it.
    private var channels: [String: ChannelRecord] = [:]
    /// The chunk rate: a bucket of `chunksPerSecond` tokens, refilled continuously.
    private var rate: ChunkRate

    init(services: Services, outbound: WebSocketOutboundWriter, state: UplinkConnectionState, logger: Logger) {
        self.services = services
        self.outbound = outbound
        self.state = state
        self.logger = logger
        self.logger[metadataKey: "connection"] = "\(state.id)"
        rate = ChunkRate(perSecond: services.chunksPerSecond, now: MonotonicClock.now())
    }

    /// Why the loop stops: a close the endpoint sends (the handler then returns).
    struct Close: Error {
        var code: UplinkCloseCode
        var reason: String
    }

    /// Rethrows what it does not handle itself (the peer broke the WebSocket protocol or sent
    /// a message over the limit): WSCore then closes with the matching code (1002, 1009).
    mutating func run(_ inbound: WebSocketInboundStream) async throws {
        var iterator = inbound.makeAsyncIterator()
        do {
            while true {
                let limit = session == nil ? UplinkProtocol.maxTextBytes
                    : maxChunkBytes + UplinkChunkFrame.prefixBytes + UplinkProtocol.maxHeaderBytes
                state.awaitingInput.store(true, ordering: .relaxed)
                let next = try await iterator.nextMessage(maxSize: limit)
                state.awaitingInput.store(false, ordering: .relaxed)
                guard let message = next else { break }
                switch message {
                case .text(let text):
                    try await handleText(text)
                    state.inflight.handled(text.utf8.count)
                case .binary(let buffer):
                    // Too fast: the next frame is read only when the rate allows, so TCP's
                    // window pushes back on the sender (nothing is refused or lost).
                    let wait = rate.take(now: MonotonicClock.now())
                    if wait > 0 {
                        if !rate.reported {
                            rate.reported = true
                            logger.notice("uplink slowed to its chunk rate", metadata: ["chunks_per_second": "\(services.chunksPerSecond)"])
                        }
                        try await Task.sleep(for: .nanoseconds(wait))
                    }
                    try await handleChunk(buffer)
                    state.inflight.handled(buffer.readableBytes)
                }
            }
        } catch let close as Close {
            logger.info("uplink closed by endpoint", metadata: [
                "code": "\(close.code.rawValue)", "reason": "\(close.reason)", "session": "\(session ?? "-")",
            ])
            try? await outbound.close(close.code.webSocketCode, reason: close.reason)
        } catch {
            // The peer went away, broke the WebSocket protocol, or sent a message over the limit.
            logger.info("uplink ended", metadata: ["session": "\(session ?? "-")", "error": "\(error)"])
            throw error
        }
    }

    // MARK: Text messages

    private mutating func handleText(_ text: String) async throws {
        let message: UplinkTextMessage
        do {
            message = try UplinkTextMessage(decoding: text)
        } catch {
            try await protocolError(error)
        }
        switch message {
        case .hello(let hello):
            guard session == nil else {
                try await protocolError(UplinkError(.helloExpected, "a connection says hello once"))
            }
            try await handleHello(hello)
        case .end(let end):
            guard session != nil else { try await protocolError(UplinkError(.helloExpected, "say hello first")) }
            try await handleEnd(interrupted: end.interrupted ?? false)
        case .welcome, .ack, .ended, .error:
            try await protocolError(UplinkError(.badMessage, "clients do not send endpoint messages"))
        }
    }

    private mutating func handleHello(_ hello: UplinkHello) async throws {
        // Overloaded: a new stream would only queue. Refused before any other work.
        if services.budget.isBusy {
            let retryAfterMs = services.budget.retryAfterMs
            logger.notice("uplink refused: the endpoint is busy", metadata: [
                "in_memory_bytes": "\(services.budget.usedBytes)", "retry_after_ms": "\(retryAfterMs)"])
            try await send(UplinkErrorMessage.busy(retryAfterMs: retryAfterMs))
            throw Close(code: .tryLater, reason: "the endpoint is busy; retry later")
        }
        guard hello.protocolVersion == UplinkProtocol.version else {
            try await send(UplinkErrorMessage(code: .badHello, message: "protocol version \(hello.protocolVersion) is not supported (1)"))
            throw Close(code: .unsupportedProtocol, reason: "unsupported protocol version")
        }
        do {
            try UplinkChannelRules.validate(hello.channels)
        } catch {
            try await protocolError(error)
        }
        let hash = Secrets.storedHash(of: hello.token)
        let token: TokenRecord
        switch try await store.checkToken(hash: hash, now: EndpointClock.nowMilliseconds()) {
        case .valid(let record): token = record
        case .unknown: throw Close(code: .tokenInvalid, reason: "unknown token")
        case .expired: throw Close(code: .tokenExpired, reason: "token expired")
        case .revoked: throw Close(code: .tokenRevoked, reason: "token revoked")
        }
        guard Identifiers.isSessionId(hello.sessionId) else {
            throw Close(code: .sessionNotFound, reason: "no such session")
        }
        if let delay = services.injectedHelloDelay { try await Task.sleep(for: delay) }
        let opening = try await store.openUplink(sessionId: hello.sessionId, token: token,
                                                 channels: hello.channels, now: EndpointClock.nowMilliseconds())
        switch opening {
        case .notFound:
            throw Close(code: .sessionNotFound, reason: "no such session")
        case .streamedByAnotherToken:
            throw Close(code: .anotherTokenStreams, reason: "another token streams this session")
        case .closed(let status):
            throw Close(code: .sessionClosed, reason: "the session is \(status.rawValue)")
        case .channelMismatch(let detail):
            try await protocolError(UplinkError(.channelMismatch, detail))
        case .opened(let record, let stored):
            session = record.id
            tokenExpiresAt = token.expiresAt
            channels = Dictionary(uniqueKeysWithValues: stored.map { ($0.channelId, $0) })
            logger[metadataKey: "session"] = "\(record.id)"
            state.helloAccepted.store(true, ordering: .relaxed)
            guard await hub.attach(state.id, sessionId: record.id, tokenHash: hash, accountId: token.accountId) else {
                throw Close(code: .tryLater, reason: "the account has its quota of open uplinks; retry later")
            }
            // A revocation between the token check above and the attach found no connection
            // to end: look again now that the hub knows this one (the revocation commits
            // before it asks the hub, so one of the two sees the other).
            if case .revoked = try await store.checkToken(hash: hash, now: EndpointClock.nowMilliseconds()) {
                state.tokenRevoked.store(true, ordering: .relaxed)
            }
            if state.tokenRevoked.load(ordering: .relaxed) {
                throw Close(code: .tokenRevoked, reason: "token revoked")
            }
            logger.info("uplink open", metadata: [
                "agent": "\(hello.agent?.prefix(80) ?? "-")", "channels": "\(stored.count)",
                "resume": "\(stored.map { "\($0.channelId)@\($0.nextSeq)" }.joined(separator: ","))",
            ])
            try await send(UplinkWelcome(
                sessionId: record.id, status: record.status.rawValue, channels: stored.map(\.progress),
                maxChunkBytes: maxChunkBytes, window: services.budget.window(configured: window)))
        }
    }

    private mutating func handleEnd(interrupted: Bool) async throws {
        guard let session else { return }
        if interrupted { logger.notice("stream ends interrupted: the client's capture died; channels close at what is stored") }
        switch try await store.endStream(sessionId: session, interrupted: interrupted, now: EndpointClock.nowMilliseconds()) {
        case .stopped(let stored, let transitions):
            await announcer.announce(transitions)
            try await send(UplinkEnded(sessionId: session, status: SessionStatus.stopped.rawValue,
                                       channels: stored.map(\.progress)))
            throw Close(code: .normal, reason: "stream complete")
        case .incomplete(let stored):
            let missing = stored.filter { !$0.complete }.map { "\($0.channelId) (next seq \($0.nextSeq))" }
            try await send(UplinkErrorMessage(
                code: .incomplete, message: "not every channel has its final chunk: \(missing.joined(separator: ", "))"))
        case .sessionClosed(let status, _):
            throw Close(code: .sessionClosed, reason: "the session is \(status.rawValue)")
        }
    }

    // MARK: Chunks

    private mutating func handleChunk(_ buffer: ByteBuffer) async throws {
        guard let session else { try await protocolError(UplinkError(.helloExpected, "say hello first")) }
        let parsed: UplinkChunkFrame.Parsed
        switch Self.parse(buffer, maxChunkBytes: maxChunkBytes) {
        case .success(let frame): parsed = frame
        case .failure(let error):
            if error.code == .badFrame { try await protocolError(error) }
            return try await refuse(error)
        }
        let header = parsed.header
        if state.tokenRevoked.load(ordering: .relaxed) {
            throw Close(code: .tokenRevoked, reason: "token revoked")
        }
        if EndpointClock.nowMilliseconds() >= tokenExpiresAt {
            throw Close(code: .tokenExpired, reason: "token expired")
        }
        guard var channel = channels[header.channelId] else {
            return try await refuse(UplinkError(.unknownChannel, "the hello did not name '\(header.channelId.prefix(80))'",
                                                channelId: header.channelId, seq: header.seq))
        }
        if header.seq < channel.nextSeq {
            return try await resent(header, session: session)
        }
        if channel.complete {
            return try await refuse(UplinkError(.channelComplete, "\(header.channelId) ended at seq \(channel.nextSeq - 1)",
                                                channelId: header.channelId, seq: header.seq))
        }
        if header.seq > channel.nextSeq {
            return try await send(UplinkErrorMessage(
                code: .seqGap, message: "\(header.channelId): expected seq \(channel.nextSeq), got \(header.seq)",
                channelId: header.channelId, seq: header.seq, expectedSeq: channel.nextSeq))
        }

        let file = ChunkFiles.relativePath(sessionId: session, channel: channel, seq: header.seq, sha256: header.sha256)
        let written: ChunkFiles.WriteResult
        do {
            written = try await files.verifyAndWrite(buffer, offset: buffer.readerIndex + parsed.payloadOffset,
                                                     count: parsed.payloadCount, expectedSHA256: header.sha256,
                                                     window: .init(startNs: header.startPtsNs, durationNs: header.durationNs),
                                                     to: file, writer: state.id)
        } catch {
            logger.error("chunk not written", metadata: ["channel": "\(header.channelId)", "seq": "\(header.seq)", "error": "\(error)"])
            try await send(UplinkErrorMessage(code: .storageFailed, message: "the endpoint could not store the chunk",
                                              channelId: header.channelId, seq: header.seq))
            throw Close(code: .internalError, reason: "storage failed")
        }
        switch written {
        case .written: break
        case .hashMismatch(let actual):
            return try await refuse(UplinkError(
                .hashMismatch, "\(header.channelId) seq \(header.seq): the payload's SHA-256 is \(actual), the header says \(header.sha256)",
                channelId: header.channelId, seq: header.seq))
        case .mediaMismatch(.noTimestamps):
            return try await refuse(UplinkError(
                .mediaMismatch, "\(header.channelId) seq \(header.seq): no audio or video PES packet with a timestamp",
                channelId: header.channelId, seq: header.seq))
        case .mediaMismatch(.notTransportStream):
            return try await refuse(UplinkError(
                .mediaMismatch, "\(header.channelId) seq \(header.seq): the payload is not MPEG-TS (188-byte packets starting with 0x47)",
                channelId: header.channelId, seq: header.seq))
        case .mediaMismatch(.outside(let ptsNs)):
            return try await refuse(UplinkError(
                .mediaMismatch, "\(header.channelId) seq \(header.seq): the media says \(Self.seconds(ptsNs)) s (modulo the 26.5 h PTS wrap), the header \(Self.seconds(header.startPtsNs)) s + \(Self.seconds(header.durationNs)) s (2 s tolerance)",
                channelId: header.channelId, seq: header.seq))
        }

        let outcome: ChunkOutcome
        do {
            outcome = try await store.storeChunk(sessionId: session, header: header, file: file, quota: services.quota,
                                                 now: EndpointClock.nowMilliseconds())
        } catch {
            logger.error("chunk not indexed", metadata: ["channel": "\(header.channelId)", "seq": "\(header.seq)", "error": "\(error)"])
            try await send(UplinkErrorMessage(code: .storageFailed, message: "the endpoint could not store the chunk",
                                              channelId: header.channelId, seq: header.seq))
            throw Close(code: .internalError, reason: "storage failed")
        }
        switch outcome {
        case .stored, .duplicate: break
        default:
            // Not indexed: the file (named by its content, so no stored chunk's) goes.
            await files.remove(file)
        }
        switch outcome {
        case .stored(let updated, let transitions):
            channel = updated
            channels[header.channelId] = channel
            try await send(UplinkAck(channelId: header.channelId, seq: header.seq, sha256: header.sha256, duplicate: false))
            await announcer.announce(transitions)
        case .duplicate:
            // Another connection of the session stored it a moment ago.
            try await resent(header, session: session)
        case .conflict(let stored):
            try await refuse(UplinkError(.seqConflict, "\(header.channelId) seq \(header.seq) is stored with SHA-256 \(stored)",
                                         channelId: header.channelId, seq: header.seq))
        case .gap(let expected):
            channels[header.channelId]?.nextSeq = expected
            try await send(UplinkErrorMessage(code: .seqGap, message: "\(header.channelId): expected seq \(expected)",
                                              channelId: header.channelId, seq: header.seq, expectedSeq: expected))
        case .unknownChannel:
            try await refuse(UplinkError(.unknownChannel, "unknown channel", channelId: header.channelId, seq: header.seq))
        case .channelComplete:
            channels[header.channelId]?.complete = true
            try await refuse(UplinkError(.channelComplete, "\(header.channelId) has ended", channelId: header.channelId, seq: header.seq))
        case .sessionClosed(let status):
            throw Close(code: .sessionClosed, reason: "the session is \(status.rawValue)")
        case .quotaExceeded(let why):
            logger.notice("chunk refused: quota", metadata: ["channel": "\(header.channelId.prefix(80))", "why": "\(why)"])
            try await send(UplinkErrorMessage(code: .quotaExceeded, message: why, channelId: header.channelId, seq: header.seq))
            throw Close(code: .quotaExceeded, reason: "quota exceeded")
        case .timelineFull(let storedNs):
            try await refuse(UplinkError(
                .badChunk, "\(header.channelId) seq \(header.seq): the channel's chunks would last more than 31 days in all (\(storedNs / 1_000_000_000) s stored)",
                channelId: header.channelId, seq: header.seq))
        }
    }

    private static func seconds(_ ns: Int64) -> String { String(format: "%.3f", Double(ns) / 1e9) }

    private static func parse(_ buffer: ByteBuffer, maxChunkBytes: Int) -> Result<UplinkChunkFrame.Parsed, UplinkError> {
        buffer.withUnsafeReadableBytes { raw in
            do throws(UplinkError) {
                return .success(try UplinkChunkFrame.parse(raw, maxChunkBytes: maxChunkBytes))
            } catch {
                return .failure(error)
            }
        }
    }

    /// A seq below the next expected: acknowledged again if it is the stored chunk, refused if not.
    private func resent(_ header: UplinkChunkHeader, session: String) async throws {
        let stored = try await store.chunk(sessionId: session, channelId: header.channelId, seq: header.seq)
        if let stored, stored.sha256 == header.sha256 {
            try await send(UplinkAck(channelId: header.channelId, seq: header.seq, sha256: header.sha256, duplicate: true))
        } else {
            try await refuse(UplinkError(
                .seqConflict, "\(header.channelId) seq \(header.seq) is stored with other bytes (SHA-256 \(stored?.sha256 ?? "?"))",
                channelId: header.channelId, seq: header.seq))
        }
    }

    // MARK: Sending

    /// A chunk error: reported, the connection stays open.
    private func refuse(_ error: UplinkError) async throws {
        logger.notice("chunk refused", metadata: [
            "code": "\(error.code.rawValue)", "channel": "\(error.channelId?.prefix(80) ?? "-")", "seq": "\(error.seq ?? -1)",
        ])
        try await send(error.wireMessage)
    }

    /// A protocol error: reported, then the connection closes with 4000.
    private func protocolError(_ error: UplinkError) async throws -> Never {
        try await send(error.wireMessage)
        throw Close(code: .protocolError, reason: error.code.rawValue)
    }

    private func protocolError(_ error: any Error) async throws -> Never {
        let uplinkError = error as? UplinkError ?? UplinkError(.badMessage, "unreadable message")
        try await protocolError(uplinkError)
    }

    /// Writes one message; the hub's watchdog drops the connection if the write
    /// cannot complete (the peer stopped reading).
    private func send(_ message: some Encodable) async throws {
        state.writeStartedAt.store(EndpointClock.nowMilliseconds(), ordering: .relaxed)
        defer { state.writeStartedAt.store(0, ordering: .relaxed) }
        try await outbound.write(.text(UplinkTextMessage.encode(message)))
    }
}

/// A token bucket of chunks: `perSecond` tokens, refilled continuously, a burst of as many.
struct ChunkRate {
    private let perSecond: Int64
    private var tokens: Int64   // in nanosecond-tokens: perSecond tokens = 1e9 * perSecond
    private var last: Int64
    /// Whether the connection's slowing has been logged (once).
    var reported = false

    init(perSecond: Int, now: Int64) {
        self.perSecond = min(max(Int64(perSecond), 1), EndpointLimits.maxChunksPerSecond)
        tokens = self.perSecond * 1_000_000_000
        last = now
    }

    /// Takes one chunk's token; returns how long (ns) to wait before handling it.
    mutating func take(now: Int64) -> Int64 {
        let capacity = perSecond * 1_000_000_000
        // At most a second's refill (the bucket holds no more), so nothing here overflows.
        let elapsed: Int64 = min(max(now - last, 0), 1_000_000_000)
        tokens = min(capacity, tokens + elapsed * perSecond)
        last = now
        tokens -= 1_000_000_000
        return tokens >= 0 ? 0 : -tokens / perSecond
    }
}
