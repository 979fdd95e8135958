import CaptureEndpoint
import CaptureUplink
import Foundation
import Hummingbird
import XCTest

/// A session belongs to the client token that streams it, and a revoked token is
/// done everywhere at once (issue 17: one token cannot take over what another streams).
final class TokenOwnershipTests: XCTestCase {
    private static func token(_ client: EndpointTestClient) async throws -> String {
        let minted = try await client.call(.post, "/capture/session/token", json: #"{"expires_in": 3600}"#)
        XCTAssertEqual(minted.status, .ok, minted.raw)
        return try XCTUnwrap(dataOf(minted.body)["token"] as? String)
    }

    private static func revoke(_ client: EndpointTestClient, _ token: String) async throws {
        let revoked = try await client.call(.post, "/capture/session/token/revoke", json: "{\"token\": \"\(token)\"}")
        XCTAssertEqual(revoked.status, .ok, revoked.raw)
    }

    func testAnotherTokenOfTheAccountCannotTakeOverAStreamingSession() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, owner) = try await UplinkTests.newSession(client)
            let intruder = try await Self.token(client)

            var streaming = try await UplinkTestClient.connect(port: port)
            try await streaming.send(UplinkTests.hello(session, owner))
            _ = try await streaming.expectWelcome()
            try await streaming.sendChunk(TestChunk(channel: "display:1", seq: 0))
            _ = try await streaming.expectAck()

            // Same account, another token: refused with its own code, even with other channels
            // (it can neither supersede the uploader nor fix the channels).
            for channels in [TestChannels.all, [TestChannels.mic]] {
                var other = try await UplinkTestClient.connect(port: port)
                try await other.send(UplinkTests.hello(session, intruder, channels: channels))
                try await other.expectClose(.anotherTokenStreams)
            }
            // The uploader did not notice.
            try await streaming.sendChunk(TestChunk(channel: "display:1", seq: 1))
            let ack = try await streaming.expectAck()
            XCTAssertEqual(ack.seq, 1)

            // The same token reconnects and resumes (superseding its own old connection).
            var again = try await UplinkTestClient.connect(port: port)
            try await again.send(UplinkTests.hello(session, owner))
            let welcome = try await again.expectWelcome()
            XCTAssertEqual(welcome.channels.first { $0.channelId == "display:1" }?.nextSeq, 2)
            try await streaming.expectClose(.superseded)

            // One token records several sessions in turn, as the SDK allows.
            let second = try await client.call(.post, "/collection/default/capture/session", json: #"{"end_user_id": "u"}"#)
            let secondId = try XCTUnwrap(dataOf(second.body)["session_id"] as? String)
            var next = try await UplinkTestClient.connect(port: port)
            try await next.send(UplinkTests.hello(secondId, owner))
            _ = try await next.expectWelcome()
            try await next.close()

            // Once the streaming token is revoked (a backend rotating it), a new token takes over.
            try await Self.revoke(client, owner)
            try await again.expectClose(.tokenRevoked)
            var successor = try await UplinkTestClient.connect(port: port)
            try await successor.send(UplinkTests.hello(session, intruder))
            let resumed = try await successor.expectWelcome()
            XCTAssertEqual(resumed.channels.first { $0.channelId == "display:1" }?.nextSeq, 2)
            // ... and from now on the old owner's successor is the one other tokens meet.
            let third = try await Self.token(client)
            var late = try await UplinkTestClient.connect(port: port)
            try await late.send(UplinkTests.hello(session, third))
            try await late.expectClose(.anotherTokenStreams)
            try await successor.close()
        }
    }

    /// A token's expiry hands the session over too (a client's token rotation).
    func testAnExpiredStreamingTokenHandsTheSessionOver() async throws {
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, shortLived) = try await UplinkTests.newSession(client, expiresIn: 2)
            let next = try await Self.token(client)
            var first = try await UplinkTestClient.connect(port: port)
            try await first.send(UplinkTests.hello(session, shortLived, channels: [TestChannels.mic]))
            _ = try await first.expectWelcome()
            var early = try await UplinkTestClient.connect(port: port)
            try await early.send(UplinkTests.hello(session, next, channels: [TestChannels.mic]))
            try await early.expectClose(.anotherTokenStreams)
            try await Task.sleep(for: .milliseconds(2200))
            var rotated = try await UplinkTestClient.connect(port: port)
            try await rotated.send(UplinkTests.hello(session, next, channels: [TestChannels.mic]))
            _ = try await rotated.expectWelcome()
            try await rotated.close()
        }
    }

    /// A revocation that lands while a hello is between its token check and its attach
    /// (widened here to 1.5 s by the injected delay) ends that connection too: no welcome,
    /// 4012, nothing stored.
    func testARevocationDuringADelayedHelloEndsIt() async throws {
        let harness = EndpointHarness { $0.injectedHelloDelay = .milliseconds(1500) }
        defer { harness.remove() }
        let (app, components) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let (session, token) = try await UplinkTests.newSession(client)
            var uplink = try await UplinkTestClient.connect(port: port)
            try await uplink.send(UplinkTests.hello(session, token))
            try await Task.sleep(for: .milliseconds(500))
            try await Self.revoke(client, token)
            // A chunk sent right behind the hello must not be stored either.
            try await uplink.sendChunk(TestChunk(channel: "display:1", seq: 0))
            try await uplink.expectClose(.tokenRevoked)
            let stored = try await components.store.chunks(sessionId: session, channelId: "display:1")
            XCTAssertEqual(stored.count, 0)
        }
    }
}
