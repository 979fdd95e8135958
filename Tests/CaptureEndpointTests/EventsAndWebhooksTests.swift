import CaptureCore
import CaptureEndpoint
import CaptureUplink
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import XCTest

/// A local webhook receiver: records every delivery, fails the first `failures`.
actor WebhookReceiver {
    struct Delivery: Sendable {
        var id: String
        var timestamp: String
        var signature: String
        var body: String
        var status: Int
    }

    private(set) var deliveries: [Delivery] = []
    private var failures: Int
    private var task: Task<Void, any Error>?
    private(set) var port = 0

    init(failures: Int) { self.failures = failures }

    func start() async throws {
        let router = Router()
        router.post("hook") { request, _ -> Response in
            var request = request
            let body = String(buffer: try await request.collectBody(upTo: 1 << 20))
            let status = await self.record(request.headers, body)
            return Response(status: .init(code: status))
        }
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "webhook-receiver")
        logger.logLevel = .critical  // its own shutdown (cancellation) is logged as errors
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        task = Task { try await app.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        port = await iterator.next() ?? 0
    }

    func stop() { task?.cancel() }

    var url: String { "http://127.0.0.1:\(port)/hook" }

    private func record(_ headers: HTTPFields, _ body: String) -> Int {
        let status = failures > 0 ? 503 : 200
        if failures > 0 { failures -= 1 }
        deliveries.append(Delivery(
            id: headers[HTTPField.Name("webhook-id")!] ?? "", timestamp: headers[HTTPField.Name("webhook-timestamp")!] ?? "",
            signature: headers[HTTPField.Name("webhook-signature")!] ?? "", body: body, status: status))
        return status
    }
}

/// Status changes reach the backend twice: signed webhooks (retried until the
/// receiver takes them, in order) and the event WebSocket the session names.
final class EventsAndWebhooksTests: XCTestCase {
    func testSignedWebhooksAndSocketEventsFollowTheSessionInOrder() async throws {
        let receiver = WebhookReceiver(failures: 2)
        try await receiver.start()
        let harness = EndpointHarness {
            $0.webhookInitialBackoffMilliseconds = 100
        }
        defer { harness.remove() }
        let (app, components) = try harness.build()
        let hookURL = await receiver.url
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            let socketURL = try await client.call(.get, "/collection/default/websocket")
            let url = try XCTUnwrap(dataOf(socketURL.body)["websocket_url"] as? String)
            let path = String(url[try XCTUnwrap(url.range(of: "/collection/")).lowerBound...])
            var events = try await UplinkTestClient.connect(port: port, path: path)
            let openedText = await events.nextText()
            let opened = try XCTUnwrap(openedText)
            let connectionId = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(opened.utf8)) as? [String: Any])?["connection_id"] as? String)
            // The ticket was for one connection: a second upgrade with it is refused.
            do {
                _ = try await UplinkTestClient.connect(port: port, path: path)
                XCTFail("a used ticket opened a second event socket")
            } catch {}

            let signer = try await client.webhookSigner()
            let (session, token) = try await UplinkTests.newSession(client, body: """
                {"end_user_id": "hooks", "callback_url": "\(hookURL)", "ws_connection_id": "\(connectionId)"}
                """)
            var uplink = try await UplinkTestClient.connect(port: port)
            try await uplink.send(UplinkTests.hello(session, token))
            _ = try await uplink.expectWelcome()
            for channel in TestChannels.all {
                try await uplink.sendChunk(TestChunk(channel: channel.channelId, seq: 0, isFinal: true))
                _ = try await uplink.expectAck()
            }
            try await uplink.send(UplinkEnd())
            guard case .ended = try await uplink.next() else { return XCTFail("no ended") }

            let firstText = await events.nextText()
            let first = try XCTUnwrap(firstText)
            let secondText = await events.nextText()
            let second = try XCTUnwrap(secondText)
            for (text, event) in [(first, "capture_session.active"), (second, "capture_session.stopped")] {
                let message = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
                XCTAssertEqual(message["channel"] as? String, "capture_session", text)
                XCTAssertEqual(message["event"] as? String, event, text)
                XCTAssertEqual((message["data"] as? [String: Any])?["capture_session_id"] as? String, session, text)
            }

            // Two events, the first refused twice: 4 deliveries, in order, the same id on every retry.
            let deadline = ContinuousClock.now + .seconds(15)
            while await receiver.deliveries.filter({ $0.status == 200 }).count < 2, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let deliveries = await receiver.deliveries
            XCTAssertEqual(deliveries.map(\.status), [503, 503, 200, 200])
            XCTAssertEqual(Set(deliveries[0...2].map(\.id)).count, 1)
            XCTAssertNotEqual(deliveries[2].id, deliveries[3].id)
            var types: [String] = []
            for delivery in deliveries {
                XCTAssertTrue(delivery.id.hasPrefix("msg_"))
                let timestamp = try XCTUnwrap(Int64(delivery.timestamp))
                XCTAssertLessThan(abs(timestamp - Int64(Date().timeIntervalSince1970)), 60)
                XCTAssertTrue(signer.verify(id: delivery.id, timestamp: timestamp, body: delivery.body, header: delivery.signature),
                              "bad signature on \(delivery.body)")
                let body = try JSONSerialization.jsonObject(with: Data(delivery.body.utf8)) as? [String: Any] ?? [:]
                XCTAssertEqual(body["capture_session_id"] as? String, session)
                XCTAssertEqual((body["data"] as? [String: Any])?["capture_session_id"] as? String, session)
                types.append(body["type"] as? String ?? "")
            }
            XCTAssertEqual(types, ["capture_session.active", "capture_session.active", "capture_session.active", "capture_session.stopped"])
            // The dispatcher records a delivery after its answer came back: the receiver may
            // have answered the last one before the row says so (seen on a loaded machine).
            var stored = try await components.store.webhooks(sessionId: session)
            while !stored.allSatisfy({ $0.deliveredAt != nil }), ContinuousClock.now < deadline + .seconds(10) {
                try await Task.sleep(for: .milliseconds(50))
                stored = try await components.store.webhooks(sessionId: session)
            }
            XCTAssertEqual(stored.map(\.attempts), [3, 1])
            XCTAssertTrue(stored.allSatisfy { $0.deliveredAt != nil })
            try await events.close()
        }
        await receiver.stop()
    }

    func testASessionWhoseUplinkFallsSilentFails() async throws {
        let receiver = WebhookReceiver(failures: 0)
        try await receiver.start()
        let harness = EndpointHarness {
            $0.silenceTimeoutSeconds = 1
            $0.silenceCheckIntervalMilliseconds = 200
        }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        let hookURL = await receiver.url
        try await app.serve { client in
            let (session, token) = try await UplinkTests.newSession(
                client, body: "{\"end_user_id\": \"silent\", \"callback_url\": \"\(hookURL)\"}")
            var uplink = try await UplinkTestClient.connect(port: try XCTUnwrap(client.port))
            try await uplink.send(UplinkTests.hello(session, token, channels: [TestChannels.mic]))
            _ = try await uplink.expectWelcome()
            try await uplink.sendChunk(TestChunk(channel: "mic:default", seq: 0))
            _ = try await uplink.expectAck()
            // While the connection is open, the session is not silent, chunks or not.
            try await Task.sleep(for: .milliseconds(1800))
            let stillActive = try await client.call(.get, "/collection/default/capture/session/\(session)")
            XCTAssertEqual(dataOf(stillActive.body)["status"] as? String, "active")
            try await uplink.close()

            let deadline = ContinuousClock.now + .seconds(10)
            var status = ""
            while status != "failed", ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
                status = dataOf(try await client.call(.get, "/collection/default/capture/session/\(session)").body)["status"] as? String ?? ""
            }
            XCTAssertEqual(status, "failed")
            let failed = try await client.call(.get, "/collection/default/capture/session?status=failed")
            XCTAssertEqual((dataOf(failed.body)["sessions"] as? [[String: Any]])?.first?["failure_reason"] as? String != nil, true)
            while await receiver.deliveries.count < 2, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let types = await receiver.deliveries.compactMap {
                (try? JSONSerialization.jsonObject(with: Data($0.body.utf8)) as? [String: Any])?["type"] as? String
            }
            XCTAssertEqual(types, ["capture_session.active", "capture_session.failed"])
        }
        await receiver.stop()
    }
}
