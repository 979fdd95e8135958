import CaptureUplink
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOWebSocket
import Synchronization

/// What the hub's watchdog reads of one connection while its handler runs:
/// lock-free, written by the handler, read by the sweep.
final class UplinkConnectionState: Sendable {
    let id: UInt64
    let openedAt: Int64
    /// Set once a hello was accepted.
    let helloAccepted = Atomic<Bool>(false)
    /// When the write in progress started (ms), 0 when none is.
    let writeStartedAt = Atomic<Int64>(0)
    /// Set when the connection's token is revoked: the handler checks it before every chunk,
    /// so nothing more is stored even while the close frame is on its way.
    let tokenRevoked = Atomic<Bool>(false)
    /// What it holds of the endpoint's budget of uplink bytes in memory.
    let inflight: UplinkInflight
    /// Its handler waits for the next message (rather than handling one): what the
    /// connection holds is then waiting for the client, not for the endpoint.
    let awaitingInput = Atomic<Bool>(false)

    init(id: UInt64, openedAt: Int64, inflight: UplinkInflight) {
        self.id = id
        self.openedAt = openedAt
        self.inflight = inflight
    }
}

/// Every open uplink connection: which session each serves (one connection per
/// session; a newer one supersedes), which token it holds (for revocation), and
/// a watchdog that drops a connection that never says hello or stops reading.
actor UplinkHub {
    private struct Entry {
        let state: UplinkConnectionState
        let outbound: WebSocketOutboundWriter
        let channel: any Channel
        let address: String
        var sessionId: String?
        var tokenHash: String?
        var accountId: String?
    }

    private var entries: [UInt64: Entry] = [:]
    /// Open connections per remote address, and attached ones per account.
    private var perAddress: [String: Int] = [:]
    private var perAccount: [String: Int] = [:]
    private let limits: EndpointLimits
    private var bySession: [String: UInt64] = [:]
    private var nextId: UInt64 = 1
    private let helloTimeoutMs: Int64
    private let writeTimeoutMs: Int64
    private let logger: Logger
    /// Uplink bytes in memory, over all connections.
    nonisolated let budget: InflightBudget
    /// For the wedge check: bytes handled at the last sweep that saw progress, and when.
    private var handledAtProgress = 0
    private var progressAt: Int64 = 0
    /// The budget spent and nothing handled for this long: the connection holding the
    /// most is closed (4015). Every byte held is then part of a message that cannot
    /// complete while no connection may read.
    static let wedgeMs: Int64 = 2000
    /// While the budget is half full, a connection that holds bytes, whose handler waits for
    /// the rest of a message, and whose socket has been asked for bytes for this long with
    /// nothing coming is closed (4015): a sender stopped mid-message, holding its share.
    /// (Time the endpoint itself did not read, held back by the budget or by its own
    /// backlog, is not the sender's.)
    static let stallMs: Int64 = 5000

    init(helloTimeoutSeconds: Int, writeTimeoutSeconds: Int, limits: EndpointLimits, budget: InflightBudget,
         logger: Logger) {
        helloTimeoutMs = Int64(helloTimeoutSeconds) * 1000
        writeTimeoutMs = Int64(writeTimeoutSeconds) * 1000
        self.limits = limits
        self.budget = budget
        self.logger = logger
    }

    /// Registers a new connection, or nil (close it with 4015) when its address or the
    /// endpoint has as many as the limits allow: checked before anything is read from it.
    func connect(outbound: WebSocketOutboundWriter, channel: any Channel) -> UplinkConnectionState? {
        let address = Self.addressKey(channel.remoteAddress)
        guard entries.count < limits.connections, perAddress[address, default: 0] < limits.connectionsPerAddress else {
            logger.notice("uplink connection refused: too many", metadata: [
                "address": "\(address)", "from_address": "\(perAddress[address, default: 0])", "all": "\(entries.count)"])
            return nil
        }
        let state = UplinkConnectionState(id: nextId, openedAt: EndpointClock.nowMilliseconds(),
                                          inflight: UplinkInflight(budget: budget, now: EndpointClock.nowMilliseconds()))
        nextId += 1
        entries[state.id] = Entry(state: state, outbound: outbound, channel: channel, address: address)
        perAddress[address, default: 0] += 1
        return state
    }

    /// Binds the connection to its session; closes (4002) the connection that served it before.
    /// False (close it with 4015) when the account has `uplinksPerAccount` attached already.
    func attach(_ id: UInt64, sessionId: String, tokenHash: String, accountId: String) async -> Bool {
        let replacing = bySession[sessionId].flatMap { entries[$0] }?.accountId == accountId ? 1 : 0
        guard perAccount[accountId, default: 0] - replacing < limits.uplinksPerAccount else {
            logger.notice("uplink refused: the account has its quota of uplinks", metadata: ["account": "\(accountId)"])
            return false
        }
        if let previous = bySession[sessionId], previous != id, let old = entries[previous] {
            logger.info("uplink superseded", metadata: ["session": "\(sessionId)", "connection": "\(previous)"])
            entries[previous]?.sessionId = nil
            close(old, code: .superseded, reason: "a newer connection took over the session")
        }
        entries[id]?.sessionId = sessionId
        entries[id]?.tokenHash = tokenHash
        if entries[id]?.accountId == nil {
            entries[id]?.accountId = accountId
            perAccount[accountId, default: 0] += 1
        }
        bySession[sessionId] = id
        return true
    }

    func disconnect(_ id: UInt64) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        if let session = entry.sessionId, bySession[session] == id { bySession[session] = nil }
        perAddress.decrementCount(entry.address)
        if let account = entry.accountId { perAccount.decrementCount(account) }
    }

    /// What the per-address limit counts by: an IPv4 address (also when it comes IPv4-mapped),
    /// or an IPv6 /64 (one host can hold a whole /64).
    static func addressKey(_ address: SocketAddress?) -> String {
        guard case .v6(let v6) = address else { return address?.ipAddress ?? "?" }
        // struct sockaddr_in6 { family, port (2 + 2 bytes), flowinfo (4), in6_addr (16), scope }:
        // the address is bytes 8..<24 (read as bytes: its member's C module is NIO's, not ours).
        let bytes = withUnsafeBytes(of: v6.address) { Array($0[8..<24]) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff {
            return bytes[12..<16].map(String.init).joined(separator: ".")
        }
        return bytes[0..<8].map { String($0, radix: 16) }.joined(separator: ":") + "::/64"
    }


    /// The sessions with a connection open right now.
    func liveSessionIds() -> [String] { Array(bySession.keys) }

    var connectionCount: Int { entries.count }

    /// Ends every connection that streams with the token. A hello still between its token
    /// check and `attach` is not here yet: it checks the token again after attaching.
    func revoke(tokenHash: String) {
        for entry in entries.values where entry.tokenHash == tokenHash {
            entry.state.tokenRevoked.store(true, ordering: .relaxed)
            close(entry, code: .tokenRevoked, reason: "token revoked")
        }
    }

    func closeAll(code: UplinkCloseCode, reason: String) {
        for entry in entries.values { close(entry, code: code, reason: reason) }
    }

    /// One pass of the watchdog.
    func sweep(now: Int64) {
        breakWedge(now: now)
        closeStalled(now: now)
        for entry in entries.values {
            if !entry.state.helloAccepted.load(ordering: .relaxed), now - entry.state.openedAt > helloTimeoutMs {
                logger.info("uplink without hello dropped", metadata: ["connection": "\(entry.state.id)"])
                close(entry, code: .helloTimeout, reason: "no hello within \(helloTimeoutMs / 1000) s")
                entry.state.helloAccepted.store(true, ordering: .relaxed)  // once
            }
            let started = entry.state.writeStartedAt.load(ordering: .relaxed)
            if started != 0, now - started > writeTimeoutMs {
                // The peer has not taken what we sent for that long: its socket is full and
                // a close frame could not get through either, so drop the TCP connection.
                logger.warning("uplink peer stopped reading; connection dropped",
                               metadata: ["connection": "\(entry.state.id)", "session": "\(entry.sessionId ?? "-")"])
                entry.channel.close(promise: nil)
                entry.state.writeStartedAt.store(0, ordering: .relaxed)
            }
        }
    }

    /// Connections wait for room in the budget, every handler holding bytes waits for input,
    /// and nothing has been handled for `wedgeMs`: what is held cannot complete (partial
    /// messages, or senders that stopped mid-message),
    /// so the connections holding the most are closed with 4015, until an eighth of the
    /// budget is freed.
    private func breakWedge(now: Int64) {
        let handled = budget.handledBytes
        // A handler still at work (storing a chunk) will release what it holds: no wedge.
        let allAwaiting = entries.values.allSatisfy { $0.state.inflight.dataHeld == 0 || $0.state.awaitingInput.load(ordering: .relaxed) }
        guard budget.hasWaiting, allAwaiting, handled == handledAtProgress else {
            handledAtProgress = handled
            progressAt = now
            return
        }
        guard now - progressAt >= Self.wedgeMs else { return }
        progressAt = now
        var freed = 0
        for victim in entries.values.sorted(by: { $0.state.inflight.dataHeld > $1.state.inflight.dataHeld }) {
            let held = victim.state.inflight.dataHeld
            guard held > 0, freed < budget.limit / 8 else { break }
            freed += held
            logger.warning("uplink budget wedged; the connection holding the most is closed", metadata: [
                "connection": "\(victim.state.id)", "held_bytes": "\(held)", "in_memory_bytes": "\(budget.usedBytes)"])
            close(victim, code: .tryLater, reason: "the endpoint is overloaded; retry later")
        }
    }

    /// See `stallMs`.
    private func closeStalled(now: Int64) {
        guard budget.isBusy else { return }
        for entry in entries.values {
            let inflight = entry.state.inflight
            let idleMs = now - inflight.lastActivityMs.load(ordering: .relaxed)
            let askedAt = inflight.readAskedAtMs.load(ordering: .relaxed)
            // Stalled: its handler waits for the rest of a message the client does not send,
            // though its socket has been read all along. (Frames queued behind a handler that
            // is still storing, and reads the gate held back, are the endpoint's doing, not the
            // client's.)
            guard inflight.dataHeld > 0, idleMs >= Self.stallMs, askedAt != 0, now - askedAt >= Self.stallMs,
                  entry.state.awaitingInput.load(ordering: .relaxed),
                  !inflight.gateWaiting.load(ordering: .relaxed) else { continue }
            logger.warning("uplink stalled mid-message while the endpoint is busy; closed", metadata: [
                "connection": "\(entry.state.id)", "held_bytes": "\(inflight.dataHeld)", "idle_ms": "\(idleMs)",
                "read_asked_ms_ago": "\(now - askedAt)"])
            inflight.lastActivityMs.store(now, ordering: .relaxed)   // once
            close(entry, code: .tryLater, reason: "stalled mid-message while the endpoint is busy; retry later")
        }
    }

    /// Sends a close frame; if the peer's socket is full that write can hang, so
    /// the TCP connection is dropped two seconds later regardless.
    private func close(_ entry: Entry, code: UplinkCloseCode, reason: String) {
        let outbound = entry.outbound
        let channel = entry.channel
        Task {
            try? await outbound.close(code.webSocketCode, reason: reason)
        }
        Task {
            try? await Task.sleep(for: .seconds(2))
            try? await channel.close()
        }
    }
}

extension UplinkCloseCode {
    var webSocketCode: WebSocketErrorCode { WebSocketErrorCode(codeNumber: Int(rawValue)) }
}
