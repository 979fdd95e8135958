import CaptureUplink
import Hummingbird
import HummingbirdWebSocket
import Logging

/// The uplink WebSocket at `/capture/uplink` (docs/uplink-protocol.md). The
/// upgrade itself needs no credential: the hello carries the client token, so
/// every refusal can be a close code the client acts on.
struct UplinkController {
    let services: UplinkConnection.Services

    func addWebSocketRoutes(to router: Router<EndpointRequestContext>) {
        let controller = self
        router.ws(RouterPath(stringLiteral: String(UplinkProtocol.path.dropFirst())), onUpgrade: { inbound, outbound, context in
            let hub = controller.services.hub
            let channel = context.requestContext.channel
            guard let state = await hub.connect(outbound: outbound, channel: channel) else {
                try? await outbound.close(UplinkCloseCode.tryLater.webSocketCode, reason: "too many connections; retry later")
                return
            }
            do {
                guard try await UplinkBudgetHandlers.install(on: channel, inflight: state.inflight, connectionId: state.id) else {
                    // No room in the memory budget even for the connection: told to come back,
                    // as a hello would be (docs/uplink-protocol.md, busy).
                    let budget = controller.services.budget
                    context.logger.notice("uplink refused: the endpoint is busy", metadata: [
                        "in_memory_bytes": "\(budget.usedBytes)", "retry_after_ms": "\(budget.retryAfterMs)"])
                    try? await outbound.write(.text(UplinkTextMessage.encode(UplinkErrorMessage.busy(retryAfterMs: budget.retryAfterMs))))
                    try? await outbound.close(UplinkCloseCode.tryLater.webSocketCode, reason: "the endpoint is busy; retry later")
                    await hub.disconnect(state.id)
                    return
                }
            } catch {
                // The connection closed before its handlers went in.
                state.inflight.releaseAll()
                await hub.disconnect(state.id)
                return
            }
            var connection = UplinkConnection(services: controller.services, outbound: outbound, state: state,
                                              logger: context.logger)
            do {
                try await connection.run(inbound)
            } catch {
                await hub.disconnect(state.id)
                throw error   // WSCore closes with the code that fits (1002, 1009)
            }
            await hub.disconnect(state.id)
        })
    }

    /// A plain GET of a WebSocket path (no upgrade) gets a clear error, not a 404.
    func addRoutes(to router: Router<EndpointRequestContext>) {
        router.get(RouterPath(stringLiteral: String(UplinkProtocol.path.dropFirst()))) { _, _ -> Response in
            throw APIError(.upgradeRequired, .invalidRequest, "the uplink is a WebSocket: connect with an Upgrade: websocket request")
        }
    }
}
