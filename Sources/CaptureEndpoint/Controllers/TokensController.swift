import CaptureCore
import Hummingbird
import Logging

/// `POST /capture/session/token` and `.../token/revoke`: the client tokens a
/// desktop uploads with. A token is shown once; the store keeps its hash.
struct TokensController {
    let store: any EndpointStore
    let uplinks: UplinkHub
    let maxBodyBytes: Int
    let maxLifetimeSeconds: Int

    func addRoutes(to group: RouterGroup<EndpointRequestContext>) {
        group.post("capture/session/token", use: create)
        group.post("capture/session/token/revoke", use: revoke)
    }

    struct CreateRequest: Decodable {
        var expiresIn: Int?
        enum CodingKeys: String, CodingKey { case expiresIn = "expires_in" }
    }

    @Sendable func create(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let body = try await RequestBodyReader.decode(CreateRequest.self, from: request, limit: maxBodyBytes, allowEmpty: true)
        let lifetime = body.expiresIn ?? 86_400
        guard lifetime >= 1, lifetime <= maxLifetimeSeconds else {
            throw APIError.invalid("'expires_in' must be 1-\(maxLifetimeSeconds) seconds")
        }
        let token = Secrets.newCredential(prefix: "cct_")
        let now = EndpointClock.nowMilliseconds()
        let record = TokenRecord(
            id: Secrets.newIdentifier(prefix: "tok_"), accountId: account.id, hash: Secrets.storedHash(of: token),
            createdAt: now, expiresAt: now + Int64(lifetime) * 1000, revokedAt: nil)
        try await store.insertToken(record)
        context.logger.info("client token issued", metadata: ["token_id": "\(record.id)", "account": "\(account.id)", "expires_in": "\(lifetime)"])
        return APIResponse.ok(ClientTokenResource(
            token: token, tokenId: record.id, expiresIn: lifetime,
            expiresAt: CaptureSessionResource.time(record.expiresAt)))
    }

    struct RevokeRequest: Decodable { var token: String }
    struct RevokeResult: Encodable { var revoked: Bool }

    @Sendable func revoke(_ request: Request, context: EndpointRequestContext) async throws -> Response {
        let account = try context.requireAccount()
        let body = try await RequestBodyReader.decode(RevokeRequest.self, from: request, limit: maxBodyBytes)
        let hash = Secrets.storedHash(of: body.token)
        guard try await store.revokeToken(hash: hash, accountId: account.id, now: EndpointClock.nowMilliseconds()) else {
            throw APIError.notFound("no such client token for this account")
        }
        await uplinks.revoke(tokenHash: hash)
        context.logger.info("client token revoked", metadata: ["account": "\(account.id)"])
        return APIResponse.ok(RevokeResult(revoked: true))
    }
}
