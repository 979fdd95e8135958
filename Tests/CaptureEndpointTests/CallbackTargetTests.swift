import CaptureCore
@testable import CaptureEndpoint
import CaptureTestSupport
import CaptureUplink
import Foundation
import Hummingbird
import XCTest

/// Webhooks go only where they should (issue 17, server-side request forgery): a callback
/// to loopback, link-local, private or otherwise non-public addresses is refused, by its
/// literal at session creation and by what its name resolves to at delivery, and a
/// redirect from an allowed receiver to a refused address is not followed.
final class CallbackTargetTests: XCTestCase {
    func testNonPublicAddressesAreRecognisedInEveryForm() {
        func v4(_ text: String) -> [UInt8] { CallbackTargetPolicy.literal(text)! }
        let refused = ["127.0.0.1", "127.255.1.2", "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",
                       "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1",
                       "192.0.2.1", "::", "::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
                       "64:ff9b::a9fe:a9fe", "2002:7f00:1::", "fe80::1", "fd12:3456::1", "fc00::1", "ff02::1",
                       "2001:db8::1", "::127.0.0.1", "64:ff9b:1::a00:1"]
        for text in refused {
            XCTAssertNotNil(CallbackTargetPolicy.nonPublicReason(v4(text)), text)
        }
        let allowed = ["8.8.8.8", "11.22.0.2", "172.32.0.1", "100.128.0.1", "192.169.0.1", "1.1.1.1",
                       "2606:4700:4700::1111", "::ffff:8.8.8.8", "2a00:1450:4001::1"]
        for text in allowed {
            XCTAssertNil(CallbackTargetPolicy.nonPublicReason(v4(text)), text)
        }
    }

    /// Literal addresses (and localhost) are refused when the session is created.
    func testPrivateLiteralCallbacksAreRefusedAtCreation() async throws {
        let harness = EndpointHarness { $0.allowPrivateWebhookTargets = false }
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            for url in ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest/meta-data/", "https://10.1.2.3/",
                        "http://192.168.0.10:8080/", "http://[::1]:9/", "http://[::ffff:127.0.0.1]/",
                        "http://[::ffff:7f00:1]/", "http://[fe80::1]/", "http://[fd00::1]/", "http://localhost:9/",
                        "http://api.localhost/", "http://100.64.1.1/", "http://0.0.0.0:9/"] {
                let created = try await client.call(.post, "/collection/default/capture/session",
                                                    json: "{\"end_user_id\": \"u\", \"callback_url\": \"\(url)\"}")
                XCTAssertEqual(created.status, .badRequest, url)
                assertErrorBody(created.body, "INVALID_REQUEST")
                XCTAssertTrue((created.body["message"] as? String ?? "").contains("--allow-private-webhook-targets"), created.raw)
            }
            let fine = try await client.call(.post, "/collection/default/capture/session",
                                             json: #"{"end_user_id": "u", "callback_url": "https://hooks.example.com/capture"}"#)
            XCTAssertEqual(fine.status, .ok, fine.raw)
        }
    }

    /// Names (and numeric forms inet_pton does not read) are checked on what they resolve
    /// to, when the webhook is sent: refused, given up at once, the receiver never reached.
    func testNamesThatResolveToLoopbackAreRefusedAtDelivery() async throws {
        let victim = WebhookReceiver(failures: 0)
        try await victim.start()
        let port = await victim.port
        let harness = EndpointHarness { $0.allowPrivateWebhookTargets = false }
        defer { harness.remove() }
        let (app, components) = try harness.build()
        try await app.serve { client in
            var urls = ["http://2130706433:\(port)/hook", "http://0x7f.1:\(port)/hook", "http://127.1:\(port)/hook"]
            // A name: this machine's, where /etc/hosts maps it to loopback (Debian does).
            let name = ProcessInfo.processInfo.hostName
            if let addresses = try? await CallbackTargetPolicy.resolve(name, port: port),
               addresses.contains(where: { CallbackTargetPolicy.nonPublicReason($0) == "loopback" }) {
                urls.append("http://\(name):\(port)/hook")
            } else {
                print("note: \(name) does not resolve to loopback here; only numeric forms are tried")
            }
            for url in urls {
                let session = try await Self.activeSession(client, callback: url)
                let delivery = try await Self.settledDelivery(components, session)
                XCTAssertNil(delivery.deliveredAt, url)
                XCTAssertNotNil(delivery.abandonedAt, "\(url): given up at once, not retried")
                XCTAssertEqual(delivery.attempts, 1, url)
                XCTAssertTrue(delivery.lastError?.contains("loopback") ?? false, "\(url): \(delivery.lastError ?? "-")")
            }
            let received = await victim.deliveries.count
            XCTAssertEqual(received, 0, "a refused callback reached the receiver")
        }
        await victim.stop()
    }

    /// A receiver on a public address (a network namespace this test makes, at 11.22.0.2)
    /// gets its hooks, Host header and all; its redirects to loopback or to the metadata
    /// address are not followed, whether redirects are off (the default) or on.
    func testARedirectToARefusedAddressIsNotFollowed() async throws {
        let namespace = try PublicReceiverNamespace()
        defer { namespace.remove() }
        let victim = WebhookReceiver(failures: 0)
        try await victim.start()
        let victimPort = await victim.port
        let base = "http://\(PublicReceiverNamespace.address):\(namespace.port)"

        for follow in [false, true] {
            let harness = EndpointHarness {
                $0.allowPrivateWebhookTargets = false
                $0.followWebhookRedirects = follow
            }
            defer { harness.remove() }
            let (app, components) = try harness.build()
            try await app.serve { client in
                let ok = try await Self.activeSession(client, callback: base + "/ok")
                let delivered = try await Self.settledDelivery(components, ok)
                XCTAssertNotNil(delivered.deliveredAt, "the public receiver: \(delivered.lastError ?? "-")")

                for target in ["http://127.0.0.1:\(victimPort)/stolen", "http://169.254.169.254/latest/meta-data/",
                               "http://[::1]:\(victimPort)/stolen"] {
                    let session = try await Self.activeSession(
                        client, callback: base + "/redirect?to=" + (target.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""))
                    let delivery = try await Self.settledDelivery(components, session, untilAbandoned: follow)
                    XCTAssertNil(delivery.deliveredAt, target)
                    if follow {
                        XCTAssertTrue(delivery.lastError?.hasPrefix("refused:") ?? false, "\(target): \(delivery.lastError ?? "-")")
                        XCTAssertNotNil(delivery.abandonedAt)
                    } else {
                        XCTAssertTrue(delivery.lastError?.contains("redirect not followed") ?? false, "\(target): \(delivery.lastError ?? "-")")
                    }
                }
                // A 307 to another public path is followed when allowed.
                if follow {
                    let session = try await Self.activeSession(client, callback: base + "/redirect?to=" + "%2Fok")
                    let delivery = try await Self.settledDelivery(components, session)
                    XCTAssertNotNil(delivery.deliveredAt, delivery.lastError ?? "-")
                }
            }
        }
        let stolen = await victim.deliveries.count
        XCTAssertEqual(stolen, 0, "a redirect reached the loopback receiver")
        let log = namespace.requests
        XCTAssertTrue(log.contains("POST /ok host=\(PublicReceiverNamespace.address):\(namespace.port)"), log)
        await victim.stop()
    }

    /// An https callback goes over TLS to the address the policy checked (the name pinned for
    /// the connection, the certificate checked against the name): delivered when the
    /// receiver's certificate is trusted (`--webhook-ca-file`), refused in the handshake
    /// when it is not, so nothing reaches the receiver then.
    func testHTTPSCallbacksAreVerifiedAgainstTheirName() async throws {
        let receiver = try HTTPSReceiver()
        defer { receiver.stop() }
        let callback = "https://localhost:\(receiver.port)/ok"
        for trusted in [true, false] {
            let harness = EndpointHarness { if trusted { $0.webhookCAFile = receiver.certificatePath } }
            defer { harness.remove() }
            let (app, components) = try harness.build()
            try await app.serve { client in
                let before = receiver.requests
                let session = try await Self.activeSession(client, callback: callback)
                let delivery = try await Self.settledDelivery(components, session)
                if trusted {
                    XCTAssertNotNil(delivery.deliveredAt, delivery.lastError ?? "-")
                    XCTAssertTrue(receiver.requests.contains("POST /ok host=localhost:\(receiver.port) id=\(delivery.id)"),
                                  receiver.requests)
                } else {
                    XCTAssertNil(delivery.deliveredAt)
                    XCTAssertTrue(delivery.lastError?.lowercased().contains("certificate") ?? false, delivery.lastError ?? "-")
                    XCTAssertEqual(receiver.requests, before, "a request reached a receiver whose certificate is not trusted")
                }
            }
        }
    }

    func testCurlsResolveEntryPinsEveryCheckedAddress() {
        XCTAssertEqual(WebhookHTTPClient.resolveEntry(host: "hooks.example.com", port: 443, addresses: ["203.0.113.5"]),
                       "hooks.example.com:443:203.0.113.5")
        XCTAssertEqual(WebhookHTTPClient.resolveEntry(host: "localhost", port: 8443, addresses: ["::1", "127.0.0.1"]),
                       "localhost:8443:[::1],127.0.0.1")
    }

    // MARK: Helpers

    /// A session with `callback` made active over the uplink (one mic chunk), so its
    /// `capture_session.active` webhook is due.
    static func activeSession(_ client: EndpointTestClient, callback: String, key: String = EndpointHarness.keyA)
        async throws -> String {
        let (session, token) = try await UplinkTests.newSession(
            client, key: key, body: "{\"end_user_id\": \"hooks\", \"callback_url\": \"\(callback)\"}")
        var uplink = try await UplinkTestClient.connect(port: try XCTUnwrap(client.port))
        try await uplink.send(UplinkTests.hello(session, token, channels: [TestChannels.mic]))
        _ = try await uplink.expectWelcome()
        try await uplink.sendChunk(TestChunk(channel: "mic:default", seq: 0))
        _ = try await uplink.expectAck()
        try await uplink.close()
        return session
    }

    /// The session's first webhook once it has been attempted (or given up on).
    static func settledDelivery(_ components: EndpointComponents, _ session: String, untilAbandoned: Bool = false)
        async throws -> WebhookDeliveryRecord {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let first = try await components.store.webhooks(sessionId: session).first, first.attempts > 0,
               !untilAbandoned || first.abandonedAt != nil || first.deliveredAt != nil {
                return first
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CaptureError(.timeout, "no webhook attempt for \(session) within 20 s")
    }
}

/// A network namespace joined to this one by a veth pair, with an HTTP receiver at
/// 11.22.0.2 (a public address, as far as the endpoint's policy goes): `/ok` answers 200,
/// `/redirect?to=URL` answers 307 to URL. Needs root (CAP_NET_ADMIN); the test is skipped
/// where namespaces cannot be made.
final class PublicReceiverNamespace {
    static let address = "11.22.0.2"
    let name = "cbt\(UInt32.random(in: 0..<1_000_000))"
    let port = 8080
    private let logPath: String
    private var server: Process?

    init() throws {
        logPath = FileManager.default.temporaryDirectory.path + "/\(name)-requests.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let host = "v\(name)h", inner = "v\(name)n"
        let setup = [
            ["netns", "add", name],
            ["link", "add", host, "type", "veth", "peer", "name", inner],
            ["link", "set", inner, "netns", name],
            ["addr", "add", "11.22.0.1/30", "dev", host],
            ["link", "set", host, "up"],
            ["netns", "exec", name, "ip", "addr", "add", "\(Self.address)/30", "dev", inner],
            ["netns", "exec", name, "ip", "link", "set", inner, "up"],
            ["netns", "exec", name, "ip", "link", "set", "lo", "up"],
        ]
        for step in setup {
            let result = try runProcess("ip", step, timeout: .seconds(10))
            if result.status != 0 {
                remove()
                throw XCTSkip("cannot make a network namespace here (ip \(step.joined(separator: " ")): \(result.stderr))")
            }
        }
        let script = """
        import http.server, sys, urllib.parse
        log = open(sys.argv[1], "a", buffering=1)
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                self.rfile.read(n)
                url = urllib.parse.urlsplit(self.path)
                log.write("POST %s host=%s\\n" % (url.path, self.headers.get("host")))
                if url.path == "/redirect":
                    self.send_response(307)
                    self.send_header("location", urllib.parse.parse_qs(url.query)["to"][0])
                else:
                    self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer(("\(Self.address)", \(port)), H).serve_forever()
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", name, "python3", "-c", script, logPath]
        try process.run()
        server = process
        // Ready when it accepts from this namespace.
        for _ in 0..<100 {
            if (try? runProcess("python3", ["-c", "import socket; socket.create_connection(('\(Self.address)', \(port)), 1)"],
                                timeout: .seconds(5)))?.status == 0 { return }
            usleep(100_000)
        }
        remove()
        throw CaptureError(.timeout, "the namespace's receiver did not start")
    }

    var requests: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func remove() {
        if let server, server.isRunning {
            // SIGKILL: the test process blocks SIGTERM, and a child started by Foundation's
            // Process inherits the mask.
            kill(server.processIdentifier, SIGKILL)
            server.waitUntilExit()
        }
        _ = try? runProcess("ip", ["link", "del", "v\(name)h"], timeout: .seconds(10))
        _ = try? runProcess("ip", ["netns", "del", name], timeout: .seconds(10))
        try? FileManager.default.removeItem(atPath: logPath)
    }
}

/// An https webhook receiver on 127.0.0.1 (Python's http.server in an ssl context) with a
/// self-signed certificate for `localhost`; it logs each POST's path, Host and webhook-id.
final class HTTPSReceiver: @unchecked Sendable {
    // @unchecked: every property is a let set in init; the served test only reads them, and
    // `server` (a Process) is touched again only by stop(), after the test.
    let directory: String
    let port: Int
    private let server: Process

    init() throws {
        directory = FileManager.default.temporaryDirectory.path + "/https-receiver-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let made = try runProcess("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost", "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
        ], timeout: .seconds(60))
        guard made.status == 0 else { throw CaptureError(.internalError, "openssl req: \(made.stderr)") }
        let script = """
        import http.server, ssl, sys
        directory = sys.argv[1]
        log = open(directory + "/requests.log", "a", buffering=1)
        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                log.write("POST %s host=%s id=%s\\n" % (self.path, self.headers.get("host"), self.headers.get("webhook-id")))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()
            def log_message(self, *args): pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory + "/cert.pem", directory + "/key.pem")
        server.socket = context.wrap_socket(server.socket, server_side=True)
        open(directory + "/port.tmp", "w").write(str(server.server_address[1]))
        import os; os.rename(directory + "/port.tmp", directory + "/port")
        server.serve_forever()
        """
        server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        server.arguments = ["-c", script, directory]
        try server.run()
        var found: Int?
        for _ in 0..<100 {
            if let text = try? String(contentsOfFile: directory + "/port", encoding: .utf8), let value = Int(text) {
                found = value
                break
            }
            usleep(100_000)
        }
        guard let found else {
            kill(server.processIdentifier, SIGKILL)
            throw CaptureError(.timeout, "the https receiver did not start")
        }
        port = found
    }

    var certificatePath: String { directory + "/cert.pem" }

    var requests: String { (try? String(contentsOfFile: directory + "/requests.log", encoding: .utf8)) ?? "" }

    func stop() {
        // SIGKILL: the test process blocks SIGTERM, and Foundation's Process children inherit the mask.
        if server.isRunning { kill(server.processIdentifier, SIGKILL) }
        server.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
