import CaptureCore
import CaptureEndpoint
import CaptureTestSupport
import CaptureUplink
import Foundation
import Hummingbird
import XCTest

/// Runs a process on a thread of its own, so the cooperative pool (which the
/// in-process endpoint needs) is not blocked while it runs.
func runProcessOffPool(_ exe: String, _ args: [String], environment: [String: String]? = nil,
                       timeout: Duration = .seconds(120)) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Result { try runProcess(exe, args, environment: environment, timeout: timeout) })
        }.start()
    }
}

/// The official VideoDB SDK (videodb 0.5.1 from PyPI, unmodified, in the venv
/// scripts/python-env makes) drives the endpoint through `base_url`.
final class SDKCompatibilityTests: XCTestCase {
    static var python: String { Repo.root + "/.venv-test/bin/python" }
    static func script(_ name: String) -> String { Repo.root + "/Tests/EndpointScripts/" + name }

    static func requirePython() throws {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw CaptureError(.internalError, "\(python) is missing: run scripts/python-env (scripts/test does)")
        }
    }

    func testTheSDKsBackendHalfCreatesListsTokensAndConnects() async throws {
        try Self.requirePython()
        let harness = EndpointHarness()
        defer { harness.remove() }
        let (app, _) = try harness.build()
        try await app.serve { client in
            let port = try XCTUnwrap(client.port)
            var environment = ProcessInfo.processInfo.environment
            environment["VIDEO_DB_API_KEY"] = EndpointHarness.keyA
            let base = "http://127.0.0.1:\(port)"
            let run = try await runProcessOffPool(Self.python, [Self.script("sdk_backend.py"), base], environment: environment)
            XCTAssertEqual(run.status, 0, run.stderr)
            let out = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], run.stdout)
            XCTAssertEqual(out["websocket_url_scheme"] as? String, "ws")
            XCTAssertTrue((out["connection_id"] as? String ?? "").hasPrefix("wsc_"), "\(out)")
            let created = out["created"] as? [String: Any] ?? [:]
            let id = try XCTUnwrap(created["id"] as? String)
            XCTAssertTrue(id.hasPrefix("cap-"))
            XCTAssertEqual(created["status"] as? String, "created")
            XCTAssertEqual(created["end_user_id"] as? String, "sdk-user-1")
            XCTAssertEqual(created["collection_id"] as? String, "default")
            XCTAssertEqual((created["metadata"] as? [String: Any])?["app"] as? String, "sdk-test")
            XCTAssertEqual(created["callback_url"] as? String, "http://127.0.0.1:9/hooks")
            let fetched = out["fetched"] as? [String: Any] ?? [:]
            XCTAssertEqual(fetched["id"] as? String, id)
            XCTAssertEqual(fetched["status"] as? String, "created")
            let second = try XCTUnwrap(out["second"] as? String)
            XCTAssertEqual(out["listed"] as? [String], [id, second].sorted())
            XCTAssertEqual(out["listed_created"] as? [String], [id, second].sorted())
            XCTAssertEqual(out["listed_active"] as? [String], [])
            XCTAssertEqual(out["wrong_key"] as? String, "AuthenticationError")
            let token = try XCTUnwrap(out["token"] as? String)

            // The SDK's token uploads; then the SDK sees the session's channels and streams.
            var uplink = try await UplinkTestClient.connect(port: port)
            try await uplink.send(UplinkTests.hello(id, token))
            _ = try await uplink.expectWelcome()
            for channel in TestChannels.all {
                try await uplink.sendChunk(TestChunk(channel: channel.channelId, seq: 0))
                _ = try await uplink.expectAck()
            }
            let seen = try await runProcessOffPool(Self.python, [Self.script("sdk_session.py"), base, id], environment: environment)
            XCTAssertEqual(seen.status, 0, seen.stderr)
            let session = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(seen.stdout.utf8)) as? [String: Any], seen.stdout)
            XCTAssertEqual(session["status"] as? String, "active")
            XCTAssertEqual(session["primary_video_channel_id"] as? String, "display:1")
            let channels = session["channels"] as? [[Any]] ?? []
            XCTAssertEqual(channels.map { "\($0[0])/\($0[1])/\($0[2])" },
                           ["display:1/VideoChannel/1", "mic:default/AudioChannel/0", "system_audio:default/AudioChannel/0"])
            for category in ["mic", "screen", "system_audio"] {
                let urls = session[category] as? [String] ?? []
                XCTAssertEqual(urls.count, 1, category)
                XCTAssertTrue(urls.first?.hasSuffix("/index.m3u8") == true, "\(urls)")
            }
            XCTAssertEqual(session["active"] as? [String], [id])
            try await uplink.close()
        }
    }
}
