import CaptureEndpoint
import Foundation
import Hummingbird
import XCTest

/// A webhook secret per account (issue 17): one account's hooks never verify with another
/// account's secret, a secret is shown once per rotation, and a rotation overlaps so an
/// honest receiver switching secrets loses no hook.
final class WebhookSecretTests: XCTestCase {
    func testEachAccountVerifiesOnlyItsOwnHooksAndRotationOverlaps() async throws {
        let receiver = WebhookReceiver(failures: 0)
        try await receiver.start()
        let harness = EndpointHarness { $0.webhookSecretOverlapSeconds = 3 }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        let hookURL = await receiver.url
        try await app.serve { client in
            let a1 = try await client.webhookSigner(key: EndpointHarness.keyA)
            let b = try await client.webhookSigner(key: EndpointHarness.keyB)
            let signingKey = try XCTUnwrap(WebhookSigner(secret: EndpointHarness.webhookSecret))

            // A points its callback at B's receiver: B's check refuses A's hook.
            _ = try await CallbackTargetTests.activeSession(client, callback: hookURL)
            var hook = try await Self.nextDelivery(receiver, count: 1)
            XCTAssertTrue(Self.verifies(a1, hook))
            XCTAssertFalse(Self.verifies(b, hook), "account B's secret verifies account A's hook")
            XCTAssertFalse(Self.verifies(signingKey, hook), "the endpoint's own key signs hooks")
            // And B's own hooks verify with B's secret only.
            _ = try await CallbackTargetTests.activeSession(client, callback: hookURL, key: EndpointHarness.keyB)
            hook = try await Self.nextDelivery(receiver, count: 2)
            XCTAssertTrue(Self.verifies(b, hook))
            XCTAssertFalse(Self.verifies(a1, hook))

            // A rotates: a new secret (shown once, never the same), and for the overlap hooks
            // carry both signatures, so a receiver still on the old one keeps verifying.
            let a2 = try await client.webhookSigner(key: EndpointHarness.keyA)
            _ = try await CallbackTargetTests.activeSession(client, callback: hookURL)
            hook = try await Self.nextDelivery(receiver, count: 3)
            XCTAssertEqual(hook.signature.split(separator: " ").count, 2, hook.signature)
            XCTAssertTrue(Self.verifies(a1, hook), "the old secret during the overlap")
            XCTAssertTrue(Self.verifies(a2, hook), "the new secret")
            try await Task.sleep(for: .milliseconds(3200))
            _ = try await CallbackTargetTests.activeSession(client, callback: hookURL)
            hook = try await Self.nextDelivery(receiver, count: 4)
            XCTAssertEqual(hook.signature.split(separator: " ").count, 1, hook.signature)
            XCTAssertTrue(Self.verifies(a2, hook))
            XCTAssertFalse(Self.verifies(a1, hook), "the old secret after the overlap")

            // Without an API key there is no secret to be had.
            let anonymous = try await client.call(.post, "/capture/webhook/secret", key: nil)
            XCTAssertEqual(anonymous.status, .unauthorized)
        }
        await receiver.stop()
    }

    static func verifies(_ signer: WebhookSigner, _ delivery: WebhookReceiver.Delivery) -> Bool {
        signer.verify(id: delivery.id, timestamp: Int64(delivery.timestamp) ?? 0, body: delivery.body, header: delivery.signature)
    }

    static func nextDelivery(_ receiver: WebhookReceiver, count: Int) async throws -> WebhookReceiver.Delivery {
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            let deliveries = await receiver.deliveries
            if deliveries.count >= count { return deliveries[count - 1] }
            try await Task.sleep(for: .milliseconds(50))
        }
        XCTFail("no webhook #\(count) within 15 s"); throw CancellationError()
    }
}
