public import CaptureCore
public import CaptureUplink
public import Foundation
public import Logging

import NIOWebSocket
public import Synchronization
import EndpointClient

/// How to replay a spool over the uplink.
public struct ReplayOptions: Sendable {
    /// `ws://host:port/capture/uplink`.
    public var url: String
    public var token: String
    public var sessionId: String
    /// 1 sends each chunk when it would have been complete in real time, 4 four
    /// times faster; 0 sends as fast as the window allows.
    public var speed: Double = 1
    /// Unacknowledged chunks in flight; nil takes the welcome's window.
    public var window: Int?
    public var reconnectDelay: Duration = .milliseconds(200)
    /// Give up after this many connections that ended without `ended`.
    public var maxReconnects = 200
    /// A connection without a welcome this long after it opened, or without an ack this long
    /// while chunks are in flight, is closed and replaced (docs/uplink-protocol.md, liveness).
    public var welcomeTimeout: Duration = .seconds(15)
    public var ackTimeout: Duration = .seconds(30)
    public var agent = "capture-uplink-replay"

    public init(url: String, token: String, sessionId: String) {
        self.url = url
        self.token = token
        self.sessionId = sessionId
    }
}

/// What a replay saw.
public struct ReplayReport: Sendable {
    public var acked = 0
    public var duplicates = 0
    /// Connections beyond the first.
    public var reconnects = 0
    /// Send-to-ack time of every acknowledged chunk, nanoseconds.
    public var ackLatenciesNs: [Int64] = []
    /// Chunk errors the endpoint sent (each made the replayer reconnect and resume).
    public var errors: [String] = []
    /// Close codes of the connections, in order (0 when none came).
    public var closeCodes: [Int] = []
    /// Hellos the endpoint refused as `busy` (overloaded); each was retried after its hint.
    public var busyRefusals = 0
    /// The `retryAfterMs` of the last `busy` refusal, not yet waited for.
    var retryAfterMs = 0
    /// The endpoint answered `end` with `ended`.
    public var ended = false
    public var failure: String?
}

/// A reference uplink client: replays a recorded spool to an endpoint the way
/// docs/uplink-protocol.md says a client behaves (window, acks, resume from the
/// welcome after any disconnect, `end` once everything is acknowledged). Used
/// by the tests and by the load generator; the agent's own uplink is separate.
public enum UplinkReplayer {
    /// Close codes after which reconnecting with the same hello cannot succeed.
    static let terminal: Set<Int> = [1009, 4000, 4002, 4003, 4004, 4005, 4010, 4011, 4012]

    public static func run(_ spool: RecordedSpool, options: ReplayOptions, logger: Logger) async -> ReplayReport {
        let report = Locked(ReplayReport())
        let started = ContinuousClock.now
        var connections = 0
        while true {
            connections += 1
            let outcome = await connect(spool, options: options, started: started, report: report, logger: logger)
            let (done, acked) = report.withLock { state -> (Bool, Int) in
                state.closeCodes.append(outcome)
                return (state.ended || Self.terminal.contains(outcome), state.acked)
            }
            logger.debug("uplink connection ended", metadata: [
                "connection": "\(connections)", "close_code": "\(outcome)", "acked_so_far": "\(acked)"])
            if done { break }
            if connections > options.maxReconnects {
                report.withLock { $0.failure = "gave up after \(connections) connections" }
                break
            }
            let hint = report.withLock { state -> Int in
                state.reconnects += 1
                defer { state.retryAfterMs = 0 }
                return state.retryAfterMs
            }
            try? await Task.sleep(for: max(options.reconnectDelay, .milliseconds(hint)))
        }
        return report.withLock { $0 }
    }

    /// One connection; returns its close code (0 if it never opened or closed without one).
    private static func connect(_ spool: RecordedSpool, options: ReplayOptions, started: ContinuousClock.Instant,
                                report: Locked<ReplayReport>, logger: Logger) async -> Int {
        let connection: WebSocketClientConnection
        do {
            let (host, port, path) = try Self.parse(options.url)
            connection = try await WebSocketClientConnection.connect(host: host, port: port, path: path,
                                                                    maxMessageSize: 1 << 20)
        } catch {
            logger.debug("uplink connection failed", metadata: ["error": "\(error)"])
            return 0
        }
        do {
            try await converse(spool, options: options, started: started, report: report, connection: connection,
                               logger: logger)
        } catch {
            logger.debug("uplink connection failed", metadata: ["error": "\(error)"])
        }
        connection.close(code: .normalClosure)
        return Int(await connection.closed()?.code ?? 0)
    }

    /// Host, port and path of a `ws://` URL.
    static func parse(_ url: String) throws -> (host: String, port: Int, path: String) {
        guard let components = URLComponents(string: url), components.scheme == "ws", let host = components.host else {
            throw CaptureError(.invalidRequest, "not a ws:// URL: \(url)")
        }
        return (host, components.port ?? 80, components.path.isEmpty ? "/" : components.path)
    }

    private static func converse(_ spool: RecordedSpool, options: ReplayOptions, started: ContinuousClock.Instant,
                                 report: Locked<ReplayReport>, connection: WebSocketClientConnection,
                                 logger: Logger) async throws {
        var messages = connection.messages.makeAsyncIterator()
        // Liveness, as the protocol asks of a client: no welcome in time, or no ack in time
        // while chunks are in flight, closes the connection (and the replay reconnects). It
        // also bounds a connection that stops delivering anything at all.
        let liveness = Locked(Liveness(since: .now))
        let watchdog = Task {
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(500))
                let now = ContinuousClock.now
                let reason: String? = liveness.withLock { state in
                    if !state.welcomed { return now - state.since > options.welcomeTimeout ? "no welcome in time" : nil }
                    return state.inFlight > 0 && now - state.since > options.ackTimeout ? "no ack in time" : nil
                }
                if let reason {
                    logger.debug("uplink connection closed by the client", metadata: ["reason": "\(reason)"])
                    connection.close(code: .goingAway, reason: reason)
                    return
                }
            }
        }
        defer { watchdog.cancel() }
        let hello = UplinkHello(token: options.token, sessionId: options.sessionId, agent: options.agent,
                                channels: spool.channels)
        try await connection.send(text: UplinkTextMessage.encode(hello))
        guard case .text(let text)? = try await messages.next() else {
            logger.debug("uplink closed before a welcome")
            return
        }
        let welcome: UplinkWelcome
        switch try UplinkTextMessage(decoding: text) {
        case .welcome(let message): welcome = message
        case .error(let error) where error.code == .busy:
            // Overloaded: the 4015 close follows; the next hello waits as long as asked.
            report.withLock { state in
                state.busyRefusals += 1
                state.retryAfterMs = min(max(error.retryAfterMs ?? 0, 0), 60_000)
            }
            return
        case let other:
            logger.debug("uplink hello not welcomed", metadata: ["answer": "\(other)"])
            return
        }
        let next = Dictionary(uniqueKeysWithValues: welcome.channels.map { ($0.channelId, $0.nextSeq) })
        let pending = spool.captureOrder.filter { $0.metadata.seq >= (next[$0.metadata.channelId] ?? 0) }
        logger.debug("uplink welcome", metadata: [
            "resume": "\(welcome.channels.map { "\($0.channelId)@\($0.nextSeq)" }.joined(separator: ","))",
            "to_send": "\(pending.count)", "window": "\(options.window ?? welcome.window)"])
        liveness.withLock { $0 = Liveness(since: .now, welcomed: true) }
        let window = Window(options.window ?? welcome.window)
        let sentAt = Locked<[String: ContinuousClock.Instant]>([:])

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for chunk in pending {
                    if options.speed > 0 {
                        let due = started + .nanoseconds(Int64(Double(chunk.metadata.startPtsNs + chunk.metadata.durationNs) / options.speed))
                        try await Task.sleep(until: due)
                    }
                    guard await window.acquire() else { return }
                    sentAt.withLock { $0["\(chunk.metadata.channelId)#\(chunk.metadata.seq)"] = .now }
                    liveness.withLock { state in
                        if state.inFlight == 0 { state.since = .now }   // the ack clock starts with the first in flight
                        state.inFlight += 1
                    }
                    try await connection.send(binary: UplinkChunkFrame.encode(header: chunk.header, payload: chunk.bytes))
                }
                // Everything acknowledged: every credit is back.
                guard await window.drain() else { return }
                try await connection.send(text: UplinkTextMessage.encode(UplinkEnd()))
            }
            defer { group.cancelAll() }
            // The window is closed however the connection ends: the sender may be parked in
            // `acquire` or `drain`, whose waits cancellation does not end. A connection reset
            // (the endpoint SIGKILLed after the last chunks went out, before their acks) ends
            // the messages with an error; without this the sender waited there forever and the
            // replay hung (EndpointRestartTests, three CI runs).
            do {
                while case .text(let text)? = try await messages.next() {
                    switch try UplinkTextMessage(decoding: text) {
                    case .ack(let ack):
                        let sent = sentAt.withLock { $0.removeValue(forKey: "\(ack.channelId)#\(ack.seq)") }
                        liveness.withLock { state in
                            state.since = .now
                            state.inFlight = max(state.inFlight - 1, 0)
                        }
                        report.withLock { state in
                            state.acked += 1
                            if ack.duplicate { state.duplicates += 1 }
                            if let sent {
                                let elapsed = ContinuousClock.now - sent
                                state.ackLatenciesNs.append(elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000)
                            }
                        }
                        await window.release()
                    case .ended:
                        report.withLock { $0.ended = true }
                    case .error(let error):
                        logger.debug("uplink error", metadata: ["code": "\(error.code.rawValue)", "message": "\(error.message)"])
                        report.withLock { $0.errors.append("\(error.code.rawValue): \(error.message)") }
                        // Resume from what the endpoint has: a new connection's welcome says.
                        await window.close()
                        connection.close(code: .normalClosure, reason: "resuming")
                    case .hello, .end, .welcome:
                        break
                    }
                }
                await window.close()
            } catch {
                await window.close()
                throw error
            }
        }
    }
}

/// Where a connection stands for its liveness checks.
struct Liveness: Sendable {
    /// When the connection opened (before the welcome), or the last ack or first send since
    /// nothing was in flight (after it).
    var since: ContinuousClock.Instant
    var welcomed = false
    var inFlight = 0
}

/// Send credits: at most `size` chunks unacknowledged.
actor Window {
    private var available: Int
    private let size: Int
    private var waiters: [CheckedContinuation<Bool, Never>] = []
    private var drainWaiter: CheckedContinuation<Bool, Never>?
    private var closed = false

    init(_ size: Int) {
        self.size = max(size, 1)
        available = max(size, 1)
    }

    /// Takes a credit; false once the connection is gone.
    func acquire() async -> Bool {
        if closed { return false }
        if available > 0 {
            available -= 1
            return true
        }
        return await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if !waiters.isEmpty {
            waiters.removeFirst().resume(returning: true)
            return
        }
        available += 1
        if available == size, let waiter = drainWaiter {
            drainWaiter = nil
            waiter.resume(returning: true)
        }
    }

    /// Waits until every credit is back (everything sent is acknowledged).
    func drain() async -> Bool {
        if closed { return false }
        if available == size { return true }
        return await withCheckedContinuation { drainWaiter = $0 }
    }

    func close() {
        closed = true
        for waiter in waiters { waiter.resume(returning: false) }
        waiters.removeAll()
        drainWaiter?.resume(returning: false)
        drainWaiter = nil
    }
}

/// A value behind a lock, shareable by reference between a connection's tasks.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout sending Value) throws -> sending R) rethrows -> R {
        try mutex.withLock(body)
    }
}
