import CaptureCore
public import CaptureUplink

/// The client side of docs/uplink-protocol.md for one session, as a value type:
/// no sockets, no threads, no clock of its own. The service thread feeds it what
/// happened (a chunk spooled, the socket opened, a message, a close, time passing)
/// and carries out the actions it returns, in order. The unit tests drive it the
/// same way with scripted endpoints.
///
///     waiting --connect--> connecting --opened/hello--> greeting --welcome--> streaming
///        ^                                                                     |  end (all acked)
///        +---------------- closed (backoff) <----------------------------------+  ending --ended--> finished
///     needsToken: the endpoint refused the token (4010-4012) and no newer one waits; `updateToken` goes on
///     (4013, another valid token streams the session, waits with backoff like a drop: that token
///     expires or is revoked, and then this one takes the session over)
///     stopped: the endpoint refused the session for good (4003/4004/4014, a protocol error)
///
/// The spool is the truth until an ack: a chunk is deleted only after its ack (or
/// after a welcome says it is stored), and everything unacknowledged is sent again
/// on the next connection, from the welcome's `nextSeq`.
public struct UplinkMachine: Sendable {
    /// The phases getStatus shows: one enum, so a phase cannot be added to one and not the other.
    public typealias Phase = UploadPhase

    /// What the driver does, in the order given.
    public enum Action: Sendable, Equatable {
        /// Open a WebSocket to the endpoint.
        case connect
        /// Send a text message (hello, end).
        case sendText(String)
        /// Read the chunk's file from the spool and send it as one chunk frame.
        case sendChunk(ChunkMetadata)
        /// The endpoint stores the chunk: delete it from the spool.
        case delete(ChunkMetadata)
        /// Send a WebSocket ping (liveness; the pong comes back as `heard`).
        case ping
        /// Close the connection with a close frame.
        case close(code: UInt16, reason: String)
        /// Drop the connection at once (a dead peer, a broken stream).
        case abort(reason: String)
        case report(UplinkReport)
    }

    /// What the session's owner hears about.
    public enum UplinkReport: Sendable, Equatable {
        case connected(resumedFrom: [String: Int])
        case acknowledged(ChunkMetadata, duplicate: Bool, atNs: Int64)
        case disconnected(code: UInt16?, reason: String, retryInNs: Int64)
        /// The token is unknown, expired or revoked (its close code); capture goes on into the spool.
        case tokenRejected(code: UInt16)
        /// The endpoint refused the token the session streamed with (its close code) and the
        /// machine goes on with the newer one `updateToken` gave.
        case tokenReplaced(code: UInt16)
        /// The endpoint refused the session for good; the chunks stay in the spool.
        case refused(code: UInt16?, reason: String)
        /// A chunk the endpoint refused (the stream resumes from the welcome).
        case chunkRefused(UplinkErrorMessage)
        /// A welcome said a channel holds more than was ever spooled (`nextSeq` past the
        /// highest seq offered): nothing was deleted for it.
        case welcomeAhead(channelId: String, nextSeq: Int, spooledUpTo: Int)
        /// Every chunk is acknowledged and the endpoint answered `end` with `ended`.
        case complete(UplinkEnded)
        /// What answers at the uplink URL does not speak docs/uplink-protocol.md: it answered
        /// the WebSocket upgrade with HTTP `httpStatus` (not 101: a 404 from a web server, or
        /// VideoDB's cloud, which has no capture uplink), or it opened a WebSocket and answered
        /// hello with something other than an uplink message, or with nothing. Said once, on
        /// the first such failure, and again only after a welcome; the machine goes on retrying
        /// with backoff (the endpoint may be fixed or replaced) and capture goes on into the spool.
        case incompatibleEndpoint(httpStatus: Int?, reason: String)
    }

    public struct Timing: Sendable {
        /// No welcome this long after the socket opened: drop it.
        public var welcomeTimeoutNs: Int64 = 15_000_000_000
        /// Chunks in flight and no ack for this long: the peer is dead or stuck; drop it.
        public var ackTimeoutNs: Int64 = 30_000_000_000
        /// A connection attempt that neither opens nor fails for this long is dropped.
        public var connectTimeoutNs: Int64 = 15_000_000_000
        /// Nothing heard from the endpoint (a message or a pong) for this long: ping it.
        public var pingIntervalNs: Int64 = 10_000_000_000
        /// Nothing heard for this long: the peer is gone without a RST; drop the connection.
        public var hangupNs: Int64 = 25_000_000_000
        public var backoff = UplinkBackoff.Policy()
        public init() {}
    }

    struct ChannelQueue: Sendable {
        /// Spooled and not acknowledged, in seq order.
        var pending: [ChunkMetadata] = []
        /// How many of `pending` (from the front) were sent on this connection.
        var sent = 0
        /// The highest seq ever offered (a repeated offer is ignored).
        var highestSeq = -1
        /// The endpoint holds the channel's final chunk.
        var complete = false
        /// The seq the endpoint said it expects (last welcome, then acks).
        var endpointNextSeq = 0
        /// The highest seq sent on any connection of this machine: a welcome deletes only
        /// what was sent (the rest is sent and acknowledged, as a duplicate if stored).
        var highestSent = -1
    }

    public let sessionId: String
    public let channels: [UplinkChannel]
    public let agent: String
    public private(set) var phase: Phase = .waiting
    var queues: [String: ChannelQueue]
    /// The newest token the owner gave (`init`, `updateToken`).
    var token: String?
    /// The token the endpoint last welcomed: the session's streaming token there. The
    /// endpoint refuses another token's hello while this one is valid (4013), so a newer
    /// token is used once the endpoint refuses this one (expired, revoked).
    var streamingToken: String?
    /// The token the current connection's hello carried.
    var helloToken: String?
    var captureFinished = false
    var window = 1
    var inFlight = 0
    var backoff: UplinkBackoff
    let timing: Timing
    /// When the current phase's timer expires (connect, welcome, ack, retry); 0: none.
    var deadlineNs: Int64 = 0
    var lastProgressNs: Int64 = 0
    /// When the endpoint was last heard from on this connection, and when we last pinged it.
    var lastHeardNs: Int64 = 0
    var lastPingNs: Int64 = 0
    /// The endpoint said it is busy: the next attempt waits at least this long (ns).
    var retryHintNs: Int64 = 0
    /// `incompatibleEndpoint` was reported and no welcome came since.
    var incompatibilityReported = false
    /// The longest wait a `busy` error can ask for: a lying endpoint cannot park the upload.
    public static let maxRetryHintNs: Int64 = 60_000_000_000

    public init(sessionId: String, channels: [UplinkChannel], token: String?, agent: String,
                timing: Timing = Timing(), seed: UInt64 = 0x9E37_79B9_7F4A_7C15) {
        self.sessionId = sessionId
        self.channels = channels
        self.agent = agent
        self.token = token
        self.timing = timing
        self.backoff = UplinkBackoff(policy: timing.backoff, seed: seed)
        self.queues = Dictionary(uniqueKeysWithValues: channels.map { ($0.channelId, ChannelQueue()) })
        if token == nil { phase = .needsToken }
    }

    // MARK: What the owner sees

    /// Chunks spooled and not yet acknowledged, over all channels.
    public var pendingChunks: Int { queues.values.reduce(0) { $0 + $1.pending.count } }
    public var pendingBytes: Int { queues.values.reduce(0) { $0 + $1.pending.reduce(0) { $0 + $1.bytes } } }
    /// Capture time of the oldest chunk not yet acknowledged (Unix ns), if any.
    public var oldestPendingCaptureNs: Int64? {
        queues.values.compactMap { $0.pending.first?.captureTimeUnixNs }.min()
    }
    public var chunksInFlight: Int { inFlight }
    public var hasToken: Bool { token != nil || streamingToken != nil }

    // MARK: Inputs

    /// The machine's first actions: connect when it has a token.
    public mutating func begin(nowNs: Int64) -> [Action] {
        guard phase == .waiting else { return [] }
        return connect(nowNs: nowNs)
    }

    /// A chunk is in the spool (metadata published). Offers of a seq already offered are ignored.
    public mutating func offer(_ chunk: ChunkMetadata, nowNs: Int64) -> [Action] {
        guard var q = queues[chunk.channelId], chunk.seq > q.highestSeq, !q.complete else { return [] }
        q.highestSeq = chunk.seq
        // Even below the endpoint's nextSeq (a recovered spool it has seen): it was never sent
        // from here, so it goes, and the endpoint's duplicate ack is what deletes it.
        q.pending.append(chunk)
        queues[chunk.channelId] = q
        return phase == .streaming ? sendWhatFits(nowNs: nowNs) : []
    }

    /// Capture is over: every chunk is offered. When some channel has no final chunk
    /// (the spool of an agent that died mid-session), `end` says the stream was
    /// interrupted and the endpoint closes it with what it has.
    public mutating func finishCapture(nowNs: Int64) -> [Action] {
        captureFinished = true
        return phase == .streaming ? sendWhatFits(nowNs: nowNs) : []
    }

    /// A new token (`updateToken`): used once the endpoint no longer takes the token it
    /// streams with (the session belongs to that token while it is valid: it expires or is
    /// revoked, and the next connection says hello with this one); a machine that waited
    /// for one connects at once.
    public mutating func updateToken(_ token: String, nowNs: Int64) -> [Action] {
        self.token = token
        switch phase {
        case .needsToken:
            backoff.reset()
            return connect(nowNs: nowNs)
        case .waiting:
            // Retry now rather than after the backoff: the token may be why it failed.
            return connect(nowNs: nowNs)
        default:
            return []
        }
    }

    /// The WebSocket is open: say hello.
    public mutating func opened(nowNs: Int64) -> [Action] {
        guard phase == .connecting, let token = streamingToken ?? token else { return [.abort(reason: "no token")] }
        helloToken = token
        phase = .greeting
        lastHeardNs = nowNs
        lastPingNs = nowNs
        deadlineNs = nowNs + timing.welcomeTimeoutNs
        let hello = UplinkHello(token: token, sessionId: sessionId, agent: agent, channels: channels)
        return [.sendText(UplinkTextMessage.encode(hello))]
    }

    /// The server answered the WebSocket upgrade with HTTP `httpStatus` instead of 101.
    /// Overload and outage statuses (408, 425, 429, 5xx: a proxy whose endpoint restarts)
    /// are a drop like any other; the rest say that no uplink answers at this URL.
    public mutating func upgradeRefused(httpStatus: Int, nowNs: Int64) -> [Action] {
        let reason = "the server answered the WebSocket upgrade with HTTP \(httpStatus), not 101"
        let transient = httpStatus == 408 || httpStatus == 425 || httpStatus == 429 || (500...599).contains(httpStatus)
        let report = transient ? [] : incompatible(httpStatus: httpStatus, reason: reason)
        return report + closed(code: nil, reason: reason, nowNs: nowNs)
    }

    /// A text message from the endpoint.
    public mutating func received(_ text: String, nowNs: Int64) -> [Action] {
        lastHeardNs = nowNs
        let message: UplinkTextMessage
        do throws(UplinkError) {
            message = try UplinkTextMessage(decoding: text)
        } catch {
            // The first word after hello is not an uplink message: not an uplink endpoint.
            let report = phase == .greeting
                ? incompatible(httpStatus: nil, reason: "the server answered hello with a message that is not an uplink message")
                : []
            return report + [.close(code: 1002, reason: "bad message from the endpoint")]
        }
        switch (phase, message) {
        case (.greeting, .welcome(let welcome)):
            return welcomed(welcome, nowNs: nowNs)
        case (.streaming, .ack(let ack)), (.ending, .ack(let ack)):
            return acknowledged(ack, nowNs: nowNs)
        case (.streaming, .error(let error)), (.ending, .error(let error)), (.greeting, .error(let error)):
            return refused(error, nowNs: nowNs)
        case (.ending, .ended(let ended)):
            phase = .finished
            deadlineNs = 0
            return [.report(.complete(ended))]
        default:
            // A message out of place: the stream can no longer be trusted; start over.
            return [.close(code: 1002, reason: "unexpected message from the endpoint")]
        }
    }

    /// The endpoint sent a binary message or one over the size limit: start over.
    public mutating func protocolViolation(closeCode: UInt16, reason: String) -> [Action] {
        [.close(code: closeCode, reason: reason)]
    }

    /// The connection is gone (or never opened). `code`: the peer's close code, nil
    /// when none came (a drop, a refused connection, a timeout).
    public mutating func closed(code: UInt16?, reason: String, nowNs: Int64) -> [Action] {
        let wasPhase = phase
        resetConnection()
        switch wasPhase {
        case .finished:
            return []
        case .needsToken, .stopped:
            return []
        default:
            break
        }
        switch code {
        case UplinkCloseCode.tokenInvalid.rawValue, UplinkCloseCode.tokenExpired.rawValue,
             UplinkCloseCode.tokenRevoked.rawValue:
            let rejected = helloToken
            helloToken = nil
            if streamingToken == rejected { streamingToken = nil }
            if token == rejected { token = nil }
            if token != nil {
                // A newer token waits (updateToken while the old one streamed): go on with it.
                backoff.reset()
                return [.report(.tokenReplaced(code: code!))] + connect(nowNs: nowNs)
            }
            phase = .needsToken
            return [.report(.tokenRejected(code: code!))]
        case UplinkCloseCode.sessionClosed.rawValue, UplinkCloseCode.sessionNotFound.rawValue,
             UplinkCloseCode.protocolError.rawValue, UplinkCloseCode.unsupportedProtocol.rawValue,
             UplinkCloseCode.quotaExceeded.rawValue, 1009:
            phase = .stopped
            return [.report(.refused(code: code, reason: reason))]
        default:
            let delay = max(backoff.next(), retryHintNs)
            retryHintNs = 0
            phase = .waiting
            deadlineNs = nowNs + delay
            return [.report(.disconnected(code: code, reason: reason, retryInNs: delay))]
        }
    }

    /// A pong (or any frame) came from the endpoint: it is alive.
    public mutating func heard(nowNs: Int64) {
        lastHeardNs = nowNs
    }

    /// Time passed: retries and watchdogs.
    public mutating func tick(nowNs: Int64) -> [Action] {
        if phase == .greeting || phase == .streaming || phase == .ending {
            if nowNs - lastHeardNs >= timing.hangupNs {
                deadlineNs = 0
                return [.abort(reason: "nothing from the endpoint in \(timing.hangupNs / 1_000_000_000) s, not even a pong")]
            }
            if nowNs - lastHeardNs >= timing.pingIntervalNs && nowNs - lastPingNs >= timing.pingIntervalNs {
                lastPingNs = nowNs
                return [.ping] + tick(deadlinesAt: nowNs)
            }
        }
        return tick(deadlinesAt: nowNs)
    }

    private mutating func tick(deadlinesAt nowNs: Int64) -> [Action] {
        guard deadlineNs > 0, nowNs >= deadlineNs else { return [] }
        switch phase {
        case .waiting:
            return connect(nowNs: nowNs)
        case .connecting:
            deadlineNs = 0
            return [.abort(reason: "connection attempt timed out")]
        case .greeting:
            deadlineNs = 0
            let reason = "no welcome in \(timing.welcomeTimeoutNs / 1_000_000_000) s"
            return incompatible(httpStatus: nil, reason: "the server accepted the WebSocket but answered hello with nothing (\(reason))")
                + [.abort(reason: reason)]
        case .streaming, .ending:
            deadlineNs = 0
            return [.abort(reason: "no acknowledgement in \(timing.ackTimeoutNs / 1_000_000_000) s")]
        case .finished, .needsToken, .stopped:
            deadlineNs = 0
            return []
        }
    }

    // MARK: Steps

    private mutating func connect(nowNs: Int64) -> [Action] {
        guard token != nil else {
            phase = .needsToken
            deadlineNs = 0
            return []
        }
        phase = .connecting
        deadlineNs = nowNs + timing.connectTimeoutNs
        return [.connect]
    }

    private mutating func resetConnection() {
        inFlight = 0
        deadlineNs = 0
        for id in queues.keys { queues[id]!.sent = 0 }
    }

    /// The report of an incompatible endpoint, the first time since the last welcome.
    private mutating func incompatible(httpStatus: Int?, reason: String) -> [Action] {
        guard !incompatibilityReported else { return [] }
        incompatibilityReported = true
        return [.report(.incompatibleEndpoint(httpStatus: httpStatus, reason: reason))]
    }

    private mutating func welcomed(_ welcome: UplinkWelcome, nowNs: Int64) -> [Action] {
        streamingToken = helloToken
        incompatibilityReported = false
        var actions: [Action] = []
        var resumed: [String: Int] = [:]
        for progress in welcome.channels {
            guard var q = queues[progress.channelId] else { continue }
            q.endpointNextSeq = progress.nextSeq
            // What the endpoint stores already leaves the spool now, if the welcome agrees
            // with what was sent from here (it claims no seq past the highest sent): a welcome
            // is the peer's word. Anything else is sent (again) and deleted only on its ack,
            // a duplicate ack where the endpoint holds it.
            if progress.nextSeq <= q.highestSent + 1 {
                while let first = q.pending.first, first.seq <= q.highestSent, first.seq < progress.nextSeq || progress.complete {
                    actions.append(.delete(first))
                    q.pending.removeFirst()
                }
            }
            q.complete = progress.complete && q.pending.isEmpty
            if progress.nextSeq > q.highestSeq + 1 {
                actions.append(.report(.welcomeAhead(channelId: progress.channelId, nextSeq: progress.nextSeq,
                                                     spooledUpTo: q.highestSeq)))
            }
            q.sent = 0
            queues[progress.channelId] = q
            resumed[progress.channelId] = progress.nextSeq
        }
        window = max(1, welcome.window)
        inFlight = 0
        phase = .streaming
        deadlineNs = 0
        actions.append(.report(.connected(resumedFrom: resumed)))
        actions += sendWhatFits(nowNs: nowNs)
        return actions
    }

    private mutating func acknowledged(_ ack: UplinkAck, nowNs: Int64) -> [Action] {
        guard var q = queues[ack.channelId] else {
            return [.close(code: 1002, reason: "ack for an unknown channel")]
        }
        guard q.sent > 0, let head = q.pending.first, head.seq == ack.seq else {
            // Acks come in the order chunks were sent; anything else is a confused peer.
            return [.close(code: 1002, reason: "ack out of order")]
        }
        q.pending.removeFirst()
        q.sent -= 1
        q.endpointNextSeq = ack.seq + 1
        if head.isFinal { q.complete = true }
        queues[ack.channelId] = q
        inFlight -= 1
        lastProgressNs = nowNs
        backoff.reset()   // the endpoint takes chunks again: the next drop retries fast
        deadlineNs = inFlight > 0 ? nowNs + timing.ackTimeoutNs : 0
        var actions: [Action] = [.delete(head), .report(.acknowledged(head, duplicate: ack.duplicate, atNs: nowNs))]
        actions += sendWhatFits(nowNs: nowNs)
        return actions
    }

    private mutating func refused(_ error: UplinkErrorMessage, nowNs: Int64) -> [Action] {
        switch error.code {
        case .channelComplete:
            // Stored already, final chunk included: what was sent for the channel is done.
            guard let id = error.channelId, var q = queues[id], let seq = error.seq,
                  let head = q.pending.first, head.seq == seq, q.sent > 0 else {
                return [.close(code: 1002, reason: "channel-complete for a chunk not in flight")]
            }
            q.pending.removeFirst()
            q.sent -= 1
            q.complete = true
            queues[id] = q
            inFlight -= 1
            return [.delete(head)] + sendWhatFits(nowNs: nowNs)
        case .quotaExceeded:
            // The endpoint takes nothing more for this session until its quota frees up (its
            // 4014 close follows): stop rather than resend into the same refusal.
            phase = .stopped
            deadlineNs = 0
            return [.report(.chunkRefused(error)),
                    .report(.refused(code: UplinkCloseCode.quotaExceeded.rawValue, reason: error.message)),
                    .close(code: 1000, reason: "quota exceeded")]
        case .busy:
            // The endpoint is overloaded; its 4015 close follows. Wait as long as it asks
            // (within reason) before the next hello.
            let ms = Int64(min(max(error.retryAfterMs ?? 0, 0), 60_000))
            retryHintNs = min(ms * 1_000_000, Self.maxRetryHintNs)
            return []
        case .incomplete:
            // `end` came too early for the endpoint (it lacks a final chunk the agent never
            // made): reconnect; the welcome says where each channel stands.
            return [.report(.chunkRefused(error)), .close(code: 1000, reason: "resuming")]
        default:
            // The chunk was not stored; the ones after it will be refused too. Resume from
            // what the endpoint has, on a new connection (its welcome says where).
            return [.report(.chunkRefused(error)), .close(code: 1000, reason: "resuming after \(error.code.rawValue)")]
        }
    }

    /// Sends pending chunks, oldest capture first, while the window has room; then
    /// `end` once capture is over and everything is acknowledged.
    private mutating func sendWhatFits(nowNs: Int64) -> [Action] {
        guard phase == .streaming else { return [] }
        var actions: [Action] = []
        while inFlight < window {
            var best: String?
            var bestTime = Int64.max
            for (id, q) in queues where q.sent < q.pending.count {
                let t = q.pending[q.sent].captureTimeUnixNs
                if t < bestTime || (t == bestTime && id < best!) { best = id; bestTime = t }
            }
            guard let id = best else { break }
            let chunk = queues[id]!.pending[queues[id]!.sent]
            queues[id]!.sent += 1
            queues[id]!.highestSent = max(queues[id]!.highestSent, chunk.seq)
            inFlight += 1
            actions.append(.sendChunk(chunk))
        }
        if inFlight > 0 {
            if deadlineNs == 0 { deadlineNs = nowNs + timing.ackTimeoutNs }
        } else if captureFinished, pendingChunks == 0 {
            let allFinal = queues.values.allSatisfy(\.complete)
            phase = .ending
            deadlineNs = nowNs + timing.ackTimeoutNs
            actions.append(.sendText(UplinkTextMessage.encode(UplinkEnd(interrupted: allFinal ? nil : true))))
        }
        return actions
    }
}
