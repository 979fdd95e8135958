import Foundation

/// Every account's webhook signing secret. An account's secret is HMAC-SHA256 of the
/// endpoint's signing key (`--webhook-secret-file`, never shown to accounts) over the
/// account and a generation, so accounts never share one: account A pointing its
/// callback at B's receiver gets hooks B's check refuses. The store keeps only the
/// generation (`WebhookSecretRecord`); `POST /capture/webhook/secret` moves an account to
/// its next generation and shows that secret, once. The generation before keeps signing
/// beside it for the overlap, so a receiver can switch without losing a hook (Standard
/// Webhooks carries several signatures in one header).
public struct WebhookSecrets: Sendable {
    private let signingKey: [UInt8]

    /// Fails unless `signingKey` is `whsec_<base64>` of 24 to 64 bytes.
    public init?(signingKey: String) {
        guard signingKey.hasPrefix("whsec_"), let data = Data(base64Encoded: String(signingKey.dropFirst(6))),
              (24...64).contains(data.count) else { return nil }
        self.signingKey = Array(data)
    }

    /// The account's secret at `generation`, `whsec_<base64 of 32 bytes>`.
    public func secret(accountId: String, generation: Int) -> String {
        "whsec_" + Data(key(accountId: accountId, generation: generation)).base64EncodedString()
    }

    private func key(accountId: String, generation: Int) -> [UInt8] {
        Secrets.hmacSHA256(key: signingKey, message: Array("capture-endpoint webhook secret v1\u{0}\(accountId)\u{0}\(generation)".utf8))
    }

    /// The signers of the account's hooks now: its generation's, and the previous one's
    /// during the overlap after a rotation.
    func signers(accountId: String, state: WebhookSecretRecord?, now: Int64) -> [WebhookSigner] {
        let generation = state?.generation ?? 0
        var signers = [WebhookSigner(key: key(accountId: accountId, generation: generation))]
        if let until = state?.previousUntil, now < until, generation > 0 {
            signers.append(WebhookSigner(key: key(accountId: accountId, generation: generation - 1)))
        }
        return signers
    }
}
