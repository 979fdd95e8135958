import CaptureUplink
import Hummingbird
import HummingbirdWebSocket

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
                try await UplinkBudgetHandlers.install(on: channel, inflight: state.inflight, connectionId: state.id)
            } catch {
                // The connection closed before its handlers went in.
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
