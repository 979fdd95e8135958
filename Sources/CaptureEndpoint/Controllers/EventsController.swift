import CaptureCore
import Hummingbird
import HummingbirdWebSocket
import NIOWebSocket
import Logging

/// `GET /collection/{cid}/websocket` (the URL of an event socket, with a
/// one-time ticket in it, since the SDK's WebSocket client sends no headers)
/// and the event socket itself, whose first message is `{"connection_id": ...}`.
struct EventsController {
    let events: EventHub
    let urls: URLResolver

    func addRoutes(to group: RouterGroup<EndpointRequestContext>) {
        group.get("collection/{cid}/websocket", use: websocketURL)
    }

    /// A plain GET of the event socket's path (no upgrade) gets a clear error, not a 404.
    func addPlainRoutes(to router: Router<EndpointRequestContext>) {
        router.get("collection/{cid}/events") { _, context -> Response in
            _ = try Identifiers.collection(context)
            throw APIError(.upgradeRequired, .invalidRequest, "the event socket is a WebSocket: connect with an Upgrade: websocket request")
        }
    }

    @Sendable func websocketURL(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let collectionId = try Identifiers.collection(context)
        let ticket = await events.issueTicket(account: account, collectionId: collectionId)
        return APIResponse.ok(WebSocketURLResource(
            websocketUrl: "\(urls.urls(for: request).webSocketBase)/collection/\(collectionId)/events?ticket=\(ticket)"))
    }

    struct ConnectionOpened: Encodable {
        var connectionId: String
        enum CodingKeys: String, CodingKey { case connectionId = "connection_id" }
    }

    func addWebSocketRoutes(to router: Router<EndpointRequestContext>) {
        let events = self.events
        router.ws("collection/{cid}/events") { request, context in
            // Checked here so a bad ticket gets a plain 401 instead of an upgrade; taken in the handler.
            guard let ticket = request.uri.queryParameters["ticket"].map(String.init),
                  let collectionId = context.parameters.get("cid"),
                  await events.isValid(ticket: ticket, collectionId: collectionId) else {
                throw APIError(.unauthorized, .unauthorized, "the event socket needs a valid ticket from GET /collection/{cid}/websocket")
            }
            guard await events.hasRoom(ticket: ticket) else {
                throw APIError(.tooManyRequests, .quotaExceeded, "the account has its quota of open event sockets; close one first")
            }
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            let ticketText = context.request.uri.queryParameters["ticket"].map(String.init) ?? ""
            let collectionId = context.requestContext.parameters.get("cid") ?? ""
            guard let ticket = await events.redeem(ticket: ticketText, collectionId: collectionId) else {
                try await outbound.close(.policyViolation, reason: "ticket already used, or the account has its quota of sockets")
                return
            }
            let id = Secrets.newIdentifier(prefix: "wsc_")
            let stream = await events.register(id: id, ticket: ticket)
            try await outbound.write(.text(JSONCoding.text(ConnectionOpened(connectionId: id))))
            context.logger.info("event socket open", metadata: ["connection_id": "\(id)", "account": "\(ticket.account.id)"])
            try? await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Clients have nothing to say here; reading keeps the close handshake and pings going.
                    for try await _ in inbound.messages(maxSize: 64 << 10) {}
                }
                group.addTask {
                    for await text in stream { try await outbound.write(.text(text)) }
                }
                try await group.next()
                group.cancelAll()
            }
            await events.unregister(id: id)
        }
    }
}
