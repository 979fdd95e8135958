import CaptureControl
import CaptureCore
import CaptureTestSupport
import CaptureUplink
import Foundation
import XCTest

/// A session pointed at a server that does not speak the capture uplink protocol (a web
/// server, VideoDB's own cloud, some other WebSocket API) is told so at once, with its own
/// error code and event, and its capture goes on into the spool; `record` and `upload` fail
/// with that code instead of waiting out their timeouts.
final class IncompatibleEndpointTests: XCTestCase {
    /// A real web server (python's http.server over an empty directory): the upgrade to
    /// /capture/uplink gets 404. The event comes on the first attempt, once however often the
    /// agent retries; status says it; the chunks stay in the spool; then `capture-agent upload`
    /// of that spool to the same server fails with ENDPOINT_INCOMPATIBLE (exit 69) at once.
    func testAWebServerAnswering404IsReportedOnceAndCaptureGoesOnIntoTheSpool() throws {
        let rig = try TestRig.shared()
        let server = try Server.httpServer()
        defer { server.stop() }

        let daemon = try DaemonProcess(rig: rig, name: "incompatible-404")
        defer { _ = daemon.terminate() }
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        let session = "cap-incompatible-404"
        _ = try client.ok("startRecording", [
            "sessionId": .string(session), "uploadToken": .string("cct_not_for_this_server"),
            "endpoint": .string("http://127.0.0.1:\(server.port)"), "channels": UplinkSessionTests.channels,
        ])
        let event = try XCTUnwrap(try client.event(.endpointIncompatible, within: 10),
                                  "no endpoint-incompatible; log:\n\(daemon.log)")
        XCTAssertEqual(event.sessionId, session)
        let incompatible = try XCTUnwrap(event.endpointIncompatible)
        XCTAssertEqual(incompatible.code, .endpointIncompatible)
        XCTAssertEqual(incompatible.httpStatus, 404, "\(incompatible)")
        XCTAssertEqual(incompatible.endpoint, "ws://127.0.0.1:\(server.port)/capture/uplink")
        let message = incompatible.message
        XCTAssertTrue(message.contains("does not speak the capture uplink protocol") && message.contains("HTTP 404"), message)

        // The agent goes on retrying (with backoff) and says nothing more about it.
        Thread.sleep(forTimeInterval: 4)
        XCTAssertNil(try client.event(.endpointIncompatible, within: 0.5), "said once")
        XCTAssertGreaterThanOrEqual(server.requests(), 2, "it retried")
        let status = try client.ok(.getStatus, as: StatusResult.self)
        let upload = try XCTUnwrap(status.upload, "\(status)")
        XCTAssertEqual(upload.incompatibleEndpoint, true, "\(upload)")
        XCTAssertEqual(upload.connected, false, "\(upload)")
        XCTAssertEqual(upload.chunksUploaded, 0, "\(upload)")
        XCTAssertGreaterThanOrEqual(upload.chunksPending, 9, "4 s of 3 channels wait in the spool: \(upload)")
        var ctlEnvironment = daemon.environment
        ctlEnvironment["CAPTURE_AGENT_SOCKET"] = daemon.socketPath
        let ctlStatus = try Capturectl.run(["status"], env: ctlEnvironment)
        XCTAssertTrue(ctlStatus.stdout.contains("does not speak the capture uplink protocol (ENDPOINT_INCOMPATIBLE)"),
                      "capturectl status says it: \(ctlStatus.stdout)")
        XCTAssertEqual(daemon.log.components(separatedBy: "does not speak the capture uplink protocol").count - 1, 1,
                       "logged once:\n\(daemon.log)")

        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let spooled = UplinkSessionTests.spooledChunks(stopped)
        XCTAssertEqual(spooled.count, 3, "\(stopped)")
        let spool = daemon.sessionDirectory(session)
        let left = (FileManager.default.enumerator(atPath: spool)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".ts") }
        XCTAssertEqual(left.count, spooled.values.reduce(0, +), "every chunk stays in the spool")
        XCTAssertEqual(daemon.terminate(), 0, "the agent shuts down cleanly")

        // `capture-agent upload` of that spool to the same server: the code, at once.
        let tokenPath = daemon.root + "/upload-token"
        FileManager.default.createFile(atPath: tokenPath, contents: Data("cct_x\n".utf8), attributes: [.posixPermissions: 0o600])
        let started = Date()
        let run = try runProcess(BuiltBinary.path("capture-agent"), [
            "upload", spool, "--endpoint", "http://127.0.0.1:\(server.port)", "--token-file", tokenPath, "--timeout", "60s",
        ], environment: daemon.environment, timeout: .seconds(90))
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(run.status, CaptureErrorCode.endpointIncompatible.exitStatus, "\(run.stdout)\n\(run.stderr)")
        XCTAssertTrue(run.stderr.contains("ENDPOINT_INCOMPATIBLE") || run.stdout.contains("ENDPOINT_INCOMPATIBLE"), run.stderr)
        XCTAssertLessThan(elapsed, 30, "it does not wait out its 60 s --timeout")
        XCTAssertEqual((FileManager.default.enumerator(atPath: spool)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".ts") }.count,
                       left.count, "upload deletes nothing it could not deliver")
    }

    /// WebSocket servers that accept the upgrade but are not uplinks: one that never answers
    /// hello (after the welcome deadline, shortened for the test), one that answers with a
    /// message of another API. Both are reported with no HTTP status.
    func testAWebSocketServerThatIsNotAnUplinkIsReported() throws {
        let rig = try TestRig.shared()
        for (mode, expected) in [("silent", "answered hello with nothing"), ("other", "not an uplink message")] {
            let server = try Server.script(mode)
            defer { server.stop() }
            let daemon = try DaemonProcess(rig: rig, name: "incompatible-\(mode)",
                                           env: ["CAPTURE_AGENT_TEST_UPLINK_TIMING": "welcome=2s"])
            defer { _ = daemon.terminate() }
            let client = try daemon.client()
            _ = try client.ok("subscribeEvents")
            _ = try client.ok("startRecording", [
                "sessionId": .string("cap-incompatible-\(mode)"), "uploadToken": .string("cct_x"),
                "endpoint": .string("http://127.0.0.1:\(server.port)"), "channels": UplinkSessionTests.channels,
            ])
            let event = try XCTUnwrap(try client.event(.endpointIncompatible, within: 10),
                                      "\(mode): no endpoint-incompatible; log:\n\(daemon.log)")
            let incompatible = try XCTUnwrap(event.endpointIncompatible, mode)
            XCTAssertEqual(incompatible.code, .endpointIncompatible, mode)
            XCTAssertNil(incompatible.httpStatus, "\(mode): \(incompatible)")
            XCTAssertTrue(incompatible.message.contains(expected), "\(mode): \(incompatible)")
            _ = try client.ok("stopRecording")
        }
    }

    /// A server process on a loopback port, stopped by PID.
    final class Server {
        let process = Process()
        let port: Int
        private let log: String
        private let dir: String

        private init(arguments: [String], port: Int?, dir: String) throws {
            self.dir = dir
            log = dir + "/server.log"
            _ = FileManager.default.createFile(atPath: log, contents: nil)
            let out = Pipe()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            process.arguments = arguments
            process.standardOutput = port == nil ? out : FileHandle.nullDevice
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
            process.currentDirectoryURL = URL(fileURLWithPath: dir)
            try process.run()
            if let port {
                self.port = port
                try Loopback.waitForListener(port)
            } else {
                // The script prints its port once it listens.
                var line = Data()
                while !line.contains(UInt8(ascii: "\n")) {
                    let data = out.fileHandleForReading.availableData
                    if data.isEmpty { throw CaptureError(.internalError, "the server exited before listening") }
                    line.append(data)
                }
                guard let p = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
                    throw CaptureError(.internalError, "the server printed no port")
                }
                self.port = p
            }
        }

        static func httpServer() throws -> Server {
            let dir = temporaryDirectory()
            try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
            let port = try Loopback.freePort()
            return try Server(arguments: ["-m", "http.server", "--bind", "127.0.0.1", "--directory", dir + "/empty", "\(port)"],
                              port: port, dir: dir)
        }

        static func script(_ mode: String) throws -> Server {
            let dir = temporaryDirectory()
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            return try Server(arguments: [Repo.root + "/Tests/EndpointScripts/not_an_uplink.py", mode], port: nil, dir: dir)
        }

        private static func temporaryDirectory() -> String {
            FileManager.default.temporaryDirectory.appendingPathComponent("capture-daemon-tests-not-an-uplink-\(UUID().uuidString)").path
        }

        /// Requests the web server logged (one line per request on stderr).
        func requests() -> Int {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").components(separatedBy: "\"GET /capture/uplink").count - 1
        }

        func stop() {
            if process.isRunning {
                process.terminate()
                process.waitUntilExit()
            }
            try? FileManager.default.removeItem(atPath: dir)
        }
    }
}
