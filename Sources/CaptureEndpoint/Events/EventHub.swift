import CaptureCore
import Logging

/// The event WebSockets (`GET /collection/{cid}/websocket` hands out the URL):
/// one-time tickets, the open connections, and the delivery of session events
/// to the connection a session names (`ws_connection_id`).
///
/// Events on a socket are best effort (a socket that is not connected misses
/// them); the webhook outbox is the durable path.
actor EventHub {
    struct Ticket {
        let account: Account
        let collectionId: String
        let expiresAt: Int64
    }

    private struct Connection {
        let account: Account
        let collectionId: String
        /// The connection's handler writes what arrives here, in order; a stalled
        /// socket keeps the newest 256 messages and stalls nobody else.
        let messages: AsyncStream<String>.Continuation
    }

    /// Ticket hash -> ticket. A ticket is good for one connection within its lifetime.
    private var tickets: [String: Ticket] = [:]
    /// Each account's outstanding ticket hashes, oldest first: at most `perAccount`, so the
    /// map is bounded by the number of accounts, and issuing never scans it whole.
    private var ticketsByAccount: [String: [String]] = [:]
    private var connections: [String: Connection] = [:]
    private var connectionsByAccount: [String: Int] = [:]
    private let ticketLifetimeMs: Int64 = 60_000
    /// `EndpointLimits.eventSocketsPerAccount`: open sockets, and unused tickets, of one account.
    private let perAccount: Int
    private let logger: Logger

    init(perAccount: Int, logger: Logger) {
        self.perAccount = perAccount
        self.logger = logger
    }

    /// A new ticket for the account's socket on `collectionId`. An account holding its
    /// quota of unused tickets loses the oldest.
    func issueTicket(account: Account, collectionId: String) -> String {
        let now = EndpointClock.nowMilliseconds()
        var outstanding = (ticketsByAccount[account.id] ?? []).filter { hash in
            guard let ticket = tickets[hash], ticket.expiresAt > now else {
                tickets[hash] = nil
                return false
            }
            return true
        }
        while outstanding.count >= perAccount {
            tickets[outstanding.removeFirst()] = nil
        }
        let ticket = Secrets.newCredential(prefix: "wst_")
        let hash = Secrets.storedHash(of: ticket)
        tickets[hash] = Ticket(account: account, collectionId: collectionId, expiresAt: now + ticketLifetimeMs)
        outstanding.append(hash)
        ticketsByAccount[account.id] = outstanding
        return ticket
    }

    /// Whether the ticket's account may open another socket.
    func hasRoom(ticket: String) -> Bool {
        guard let found = tickets[Secrets.storedHash(of: ticket)] else { return false }
        return connectionsByAccount[found.account.id, default: 0] < perAccount
    }

    /// Whether a ticket would be taken (without taking it).
    func isValid(ticket: String, collectionId: String) -> Bool {
        guard let found = tickets[Secrets.storedHash(of: ticket)] else { return false }
        return found.expiresAt > EndpointClock.nowMilliseconds() && found.collectionId == collectionId
    }

    /// Takes a ticket (once) if it is valid for `collectionId`.
    func redeem(ticket: String, collectionId: String) -> Ticket? {
        let hash = Secrets.storedHash(of: ticket)
        guard let found = tickets.removeValue(forKey: hash), found.expiresAt > EndpointClock.nowMilliseconds(),
              found.collectionId == collectionId,
              connectionsByAccount[found.account.id, default: 0] < perAccount else { return nil }
        // The place is taken here, in the same actor turn as the check: `register` follows at
        // once and `unregister` gives it back.
        connectionsByAccount[found.account.id, default: 0] += 1
        return found
    }

    /// Registers a connection; its handler writes the returned stream to the socket.
    func register(id: String, ticket: Ticket) -> AsyncStream<String> {
        let (stream, continuation) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(256))
        connections[id] = Connection(account: ticket.account, collectionId: ticket.collectionId, messages: continuation)
        return stream
    }

    func unregister(id: String) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        connection.messages.finish()
        connectionsByAccount.decrementCount(connection.account.id)
    }

    func closeAll() {
        for connection in connections.values { connection.messages.finish() }
        connections.removeAll()
        connectionsByAccount.removeAll()
    }

    var connectionCount: Int { connections.count }

    /// Sends each transition to the connection its session names, if that
    /// connection is open and belongs to the session's account.
    func publish(_ transitions: [SessionTransition], alsoTo extra: String? = nil) {
        for transition in transitions {
            let session = transition.session
            var targets = Set<String>()
            if let id = session.wsConnectionId { targets.insert(id) }
            if let extra { targets.insert(extra) }
            let text = EventSocketMessage(transition).json
            for id in targets {
                guard let connection = connections[id], connection.account.id == session.accountId else { continue }
                if case .dropped = connection.messages.yield(text) {
                    logger.warning("event socket is not reading; oldest event dropped", metadata: ["connection": "\(id)"])
                }
            }
        }
    }
}
