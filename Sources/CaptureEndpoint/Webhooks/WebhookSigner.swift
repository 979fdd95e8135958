import Foundation

/// Signs webhook deliveries the Standard Webhooks way
/// (https://www.standardwebhooks.com): the secret is `whsec_` + base64 of the
/// key; each delivery carries `webhook-id`, `webhook-timestamp` (Unix seconds)
/// and `webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`.
public struct WebhookSigner: Sendable {
    private let key: [UInt8]

    /// Fails unless the secret is `whsec_<base64>` of 24 to 64 bytes.
    public init?(secret: String) {
        guard secret.hasPrefix("whsec_"), let data = Data(base64Encoded: String(secret.dropFirst(6))),
              (24...64).contains(data.count) else { return nil }
        key = Array(data)
    }

    init(key: [UInt8]) { self.key = key }

    /// The `webhook-signature` value for one delivery attempt.
    public func signature(id: String, timestamp: Int64, body: String) -> String {
        let content = Array("\(id).\(timestamp).".utf8) + Array(body.utf8)
        return "v1," + Data(Secrets.hmacSHA256(key: key, message: content)).base64EncodedString()
    }

    /// Whether `header` (space-separated `v1,<sig>` entries) holds the right signature.
    public func verify(id: String, timestamp: Int64, body: String, header: String) -> Bool {
        let expected = signature(id: id, timestamp: timestamp, body: body)
        return header.split(separator: " ").contains { Secrets.constantTimeEqual(String($0), expected) }
    }
}
