import CaptureCore
import CaptureEndpoint
import CaptureTestSupport
import CaptureUplink
import Foundation
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A webhook receiver that misbehaves on purpose, on a loopback port of its own: `trickle`
/// answers 200 at once and then sends its 1000-byte body a byte every half second; `dead`
/// never accepts (the kernel's backlog takes the connection, nobody answers).
final class MisbehavingReceiver: @unchecked Sendable {
    // @unchecked: `listener` is set once in init; the accept thread only reads it.
    enum Kind { case trickle, dead }
    let port: Int
    /// Requests the trickling receiver has started answering.
    let requests = Atomic<Int>(0)
    private let listener: Int32
    private let stopped = Atomic<Bool>(false)

    init(_ kind: Kind) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = fd
        guard kind == .trickle else { return }
        Thread.detachNewThread { [self] in
            while !stopped.load(ordering: .relaxed) {
                let client = accept(listener, nil, nil)
                guard client >= 0 else { return }
                requests.add(1, ordering: .relaxed)
                Thread.detachNewThread { [self] in trickle(client) }
            }
        }
    }

    var url: String { "http://127.0.0.1:\(port)/hook" }

    private func trickle(_ client: Int32) {
        defer { close(client) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        _ = recv(client, &buffer, buffer.count, 0)
        let head = Array("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\n".utf8)
        guard send(client, head, head.count, Int32(MSG_NOSIGNAL)) == head.count else { return }
        while !stopped.load(ordering: .relaxed) {
            usleep(500_000)
            var byte: UInt8 = 0x2e
            if send(client, &byte, 1, Int32(MSG_NOSIGNAL)) != 1 { return }
        }
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// One account's slow or dead webhook receivers delay only its own deliveries.
final class WebhookIsolationTests: XCTestCase {
    /// Account A has six sessions whose receivers trickle or never answer; account B's
    /// `capture_session.active` still arrives at once. Each attempt at A's receivers ends at
    /// the whole-exchange deadline (2 s here; the body counts) and is tried again.
    func testASlowAccountDelaysOnlyItsOwnWebhooks() async throws {
        let trickle = try MisbehavingReceiver(.trickle)
        let dead = try MisbehavingReceiver(.dead)
        defer {
            trickle.stop()
            dead.stop()
        }
        let healthy = WebhookReceiver(failures: 0)
        try await healthy.start()
        let harness = EndpointHarness {
            $0.webhookTimeoutSeconds = 2
            $0.webhookInitialBackoffMilliseconds = 200
        }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        let healthyURL = await healthy.url
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            func activate(key: String, hook: String) async throws {
                let (session, token) = try await UplinkTests.newSession(
                    client, key: key, body: "{\"end_user_id\": \"hooks\", \"callback_url\": \"\(hook)\"}")
                var uplink = try await UplinkTestClient.connect(port: port)
                try await uplink.send(UplinkTests.hello(session, token, channels: [TestChannels.mic]))
                _ = try await uplink.expectWelcome()
                try await uplink.sendChunk(TestChunk(channel: "mic:default", seq: 0))
                _ = try await uplink.expectAck()
                try await uplink.close()
            }
            for i in 0..<6 {
                try await activate(key: EndpointHarness.keyA, hook: i % 2 == 0 ? trickle.url : dead.url)
            }
            // A's deliveries are under way (and stuck) before B's exists.
            try await Task.sleep(for: .milliseconds(600))
            let started = ContinuousClock.now
            try await activate(key: EndpointHarness.keyB, hook: healthyURL)
            while await healthy.deliveries.isEmpty, ContinuousClock.now - started < .seconds(20) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let waited = ContinuousClock.now - started
            print("webhook isolation: B's hook after \(waited) with A's receivers stuck")
            let types = await healthy.deliveries.map(\.body)
            XCTAssertEqual(types.count, 1, "B's hook arrived (waited \(waited))")
            XCTAssertTrue(types.first?.contains("capture_session.active") == true)
            XCTAssertLessThan(waited, .seconds(5), "B waited on A's receivers")

            // The trickling receiver is given up on at the deadline and tried again.
            let deadline = ContinuousClock.now + .seconds(15)
            while trickle.requests.load(ordering: .relaxed) < 6, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            XCTAssertGreaterThanOrEqual(trickle.requests.load(ordering: .relaxed), 6,
                                        "three sessions' hooks, each tried again after its 2 s deadline")
        }
        await healthy.stop()
    }
}
