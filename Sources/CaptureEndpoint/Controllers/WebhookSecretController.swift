import CaptureCore
import Hummingbird
import Logging

/// `POST /capture/webhook/secret`: the account's webhook signing secret, new each time
/// (shown once, never stored): the one before keeps signing beside it for
/// `overlapSeconds`, then only the new one does.
struct WebhookSecretController {
    let store: any EndpointStore
    let secrets: WebhookSecrets
    let overlapSeconds: Int

    func addRoutes(to group: RouterGroup<EndpointRequestContext>) {
        group.post("capture/webhook/secret", use: rotate)
    }

    @Sendable func rotate(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let now = EndpointClock.nowMilliseconds()
        let state = try await store.rotateWebhookSecret(accountId: account.id, now: now,
                                                        previousUntil: now + Int64(overlapSeconds) * 1000)
        context.logger.info("webhook secret rotated", metadata: ["account": "\(account.id)", "generation": "\(state.generation)"])
        return APIResponse.ok(WebhookSecretResource(
            secret: secrets.secret(accountId: account.id, generation: state.generation),
            generation: state.generation,
            previousValidUntil: state.previousUntil.map(CaptureSessionResource.time)))
    }
}
