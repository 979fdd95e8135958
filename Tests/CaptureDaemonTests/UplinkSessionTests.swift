import CaptureControl
import CaptureCore
import CaptureTestSupport
import CaptureUplink
import Foundation
import XCTest

/// The whole flow on one machine: a backend makes a session and a token at a real
/// capture-endpoint process, a real agent daemon records the rig's screen, mic and
/// system audio into its spool and uploads every chunk over its libwebsockets
/// uplink, and what the endpoint stored is checked file by file.
final class UplinkSessionTests: XCTestCase {
    static let channels: JSONValue = .array(["display:1", "mic:default", "system_audio:default"].map {
        .object(["channel_id": .string($0)])
    })

    static func start(_ client: ControlClient, session: String, token: String, endpoint: LiveEndpoint,
                      file: StaticString = #filePath, line: UInt = #line) throws {
        _ = try client.ok("startRecording", [
            "sessionId": .string(session), "uploadToken": .string(token), "endpoint": .string(endpoint.baseURL),
            "channels": channels,
        ], file: file, line: line)
    }

    /// Chunks per channel of a stop's summary.
    static func spooledChunks(_ stopResult: StopRecordingResult) -> [String: Int] {
        Dictionary(stopResult.summary.channels.map { ($0.channel, $0.chunks) }, uniquingKeysWith: { a, _ in a })
    }

    /// 20 s of display + mic + system audio: every chunk reaches the endpoint once, with the
    /// bytes the agent hashed; recording-complete comes after the last ack (the endpoint
    /// already holds everything when it does); the spool and the token file are gone; the
    /// export plays for 20 s with a picture and the audio tracks.
    func testTwentySecondSessionArrivesWholeAndExports() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "whole")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let token = try endpoint.mintToken()

        let daemon = try DaemonProcess(rig: rig, name: "uplink-whole")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        try Self.start(client, session: session, token: token, endpoint: endpoint)
        let tokenFile = daemon.runtimeDir + "/capture-agent/tokens/" + session
        XCTAssertEqual(try? String(contentsOfFile: tokenFile, encoding: .utf8), token, "kept for a restart, in the runtime dir")
        let mode = (try FileManager.default.attributesOfItem(atPath: tokenFile)[.posixPermissions] as? NSNumber)?.intValue
        XCTAssertEqual(mode, 0o600)

        // While recording, status counts what the endpoint acknowledged.
        Thread.sleep(forTimeInterval: 10)
        let status = try client.ok(.getStatus, as: StatusResult.self)
        let upload = try XCTUnwrap(status.upload)
        XCTAssertEqual(upload.connected, true, "\(status)")
        XCTAssertGreaterThanOrEqual(upload.chunksUploaded, 3 * 8, "\(upload)")
        XCTAssertLessThan(upload.uploadLagMs, 3000, "\(upload)")
        for channel in status.channels {
            XCTAssertGreaterThanOrEqual(channel.chunksUploaded ?? 0, 8, "\(channel)")
        }
        let progress = try XCTUnwrap(try client.event(.uploadProgress, within: 5)?.uploadProgress, "upload-progress while recording")
        XCTAssertEqual(progress.endpoint, "ws://127.0.0.1:\(endpoint.port)/capture/uplink")

        Thread.sleep(forTimeInterval: 10)
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let spooled = Self.spooledChunks(stopped)
        XCTAssertEqual(spooled.count, 3, "\(stopped)")

        let complete = try XCTUnwrap(try client.event(.recordingComplete, within: 30), "no recording-complete; log:\n\(daemon.log)")
        XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint)
        // The endpoint acknowledges only what it committed: everything is there already.
        let stored = try endpoint.verifyStored(session)
        XCTAssertEqual(stored, spooled, "every chunk the agent spooled is stored, once")
        XCTAssertEqual(complete.recordingComplete?.chunks, spooled.values.reduce(0, +))
        XCTAssertEqual(try endpoint.session(session)["status"] as? String, "stopped")
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.sessionDirectory(session)), "the spool keeps nothing")
        XCTAssertFalse(FileManager.default.fileExists(atPath: tokenFile), "the token file goes with the session")
        XCTAssertFalse(daemon.log.contains(token), "the token never reaches the log")
        XCTAssertFalse(endpoint.log.contains(token))

        let mp4 = try endpoint.export(session)
        let probe = try Media.probe(mp4)
        let video = try XCTUnwrap(probe.stream("video"))
        XCTAssertEqual(video.codecName, "h264")
        XCTAssertEqual(video.width, 1920)
        XCTAssertEqual(video.height, 1080)
        XCTAssertEqual(probe.formatDuration, 20, accuracy: 0.6, "the export is as long as the session")
        XCTAssertEqual(probe.streams.filter { $0.codecType == "audio" }.count, 3, "the mix and each audio channel")
    }

    /// What the VideoDB SDK does at the end: `stopRecording`, then `shutdown` at once. The
    /// agent waits for the upload, and recording-complete goes out before it exits, even when
    /// the upload completes inside the shutdown (a test-only delay holds the event back for
    /// 1 s there; with the upload unlisted before its event, the agent exited without it).
    func testShutdownRightAfterStopStillSaysRecordingComplete() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "stop-shutdown")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let token = try endpoint.mintToken()
        let daemon = try DaemonProcess(rig: rig, name: "stop-shutdown", env: ["CAPTURE_AGENT_TEST_COMPLETE_DELAY_MS": "1000"])
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        try Self.start(client, session: session, token: token, endpoint: endpoint)
        Thread.sleep(forTimeInterval: 3)
        _ = try client.ok("stopRecording")
        XCTAssertEqual(try client.ok(.shutdown, as: ShutdownResult.self).shuttingDown, true)
        let complete = try client.event(.recordingComplete, within: 30)
        XCTAssertNotNil(complete, "no recording-complete before the agent exited; log:\n\(daemon.log)")
        XCTAssertEqual(complete?.recordingComplete?.deliveredTo, .endpoint)
        XCTAssertEqual(daemon.waitForExit(), 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: daemon.sessionDirectory(session)), "the spool keeps nothing")
    }

    /// `capture-agent record --endpoint --token-file`: a one-off upload without the daemon.
    /// The token file must be the owner's alone; the command exits once the endpoint
    /// acknowledged everything, and the output directory keeps no chunk.
    func testRecordUploadsWithoutTheDaemon() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "record")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let sandbox = try DaemonSandbox(kind: "record", name: "upload")
        defer { try? FileManager.default.removeItem(atPath: sandbox.root) }
        let tokenPath = sandbox.root + "/token"
        let token = try endpoint.mintToken()
        FileManager.default.createFile(atPath: tokenPath, contents: Data((token + "\n").utf8), attributes: [.posixPermissions: 0o644])
        let out = sandbox.root + "/out"
        let arguments = ["record", "--duration", "4s", "--out", out, "--session-id", session,
                         "--endpoint", endpoint.baseURL, "--token-file", tokenPath]
        let environment = sandbox.environment(rig: rig)

        let refused = try runProcess(BuiltBinary.path("capture-agent"), arguments, environment: environment, timeout: .seconds(30))
        XCTAssertEqual(refused.status, CaptureErrorCode.invalidToken.exitStatus, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("readable by other users"), refused.stderr)

        chmod(tokenPath, 0o600)
        let run = try runProcess(BuiltBinary.path("capture-agent"), arguments, environment: environment, timeout: .seconds(90))
        XCTAssertEqual(run.status, 0, run.stderr)
        XCTAssertTrue(run.stdout.contains("uploaded 12 chunks"), run.stdout)
        XCTAssertFalse(run.stderr.contains(token))
        let stored = try endpoint.verifyStored(session)
        XCTAssertEqual(stored, ["display:1": 4, "mic:default": 4, "system_audio:default": 4], "4 s in 1 s chunks")
        let left = (FileManager.default.enumerator(atPath: out)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".ts") }
        XCTAssertEqual(left, [], "acknowledged chunks leave the output directory")
    }

    /// `capture-agent upload DIR`: a directory `record` made without an endpoint is delivered
    /// later, every chunk once (the channels as the spool's reader names them: the video
    /// primary), and what was acknowledged leaves the directory.
    func testUploadDeliversADirectoryRecordedEarlier() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "upload-dir")
        try endpoint.start()
        defer { endpoint.terminate() }
        let session = try endpoint.createSession()
        let sandbox = try DaemonSandbox(kind: "record", name: "upload-dir")
        defer { try? FileManager.default.removeItem(atPath: sandbox.root) }
        let out = sandbox.root + "/out"
        let environment = sandbox.environment(rig: rig)
        let recorded = try runProcess(BuiltBinary.path("capture-agent"), [
            "record", "--duration", "3s", "--out", out, "--session-id", session,
            "--channel", "display:1", "--channel", "mic:default",
        ], environment: environment, timeout: .seconds(60))
        XCTAssertEqual(recorded.status, 0, recorded.stderr)
        let tokenPath = sandbox.root + "/token"
        FileManager.default.createFile(atPath: tokenPath, contents: Data((try endpoint.mintToken() + "\n").utf8),
                                       attributes: [.posixPermissions: 0o600])
        let upload = try runProcess(BuiltBinary.path("capture-agent"), [
            "upload", out, "--endpoint", endpoint.baseURL, "--token-file", tokenPath,
        ], environment: environment, timeout: .seconds(60))
        XCTAssertEqual(upload.status, 0, upload.stderr)
        XCTAssertTrue(upload.stdout.contains("uploaded 6 chunks"), upload.stdout)
        XCTAssertEqual(try endpoint.verifyStored(session), ["display:1": 3, "mic:default": 3])
        let stored = try endpoint.session(session)
        let primary = (stored["channels"] as? [[String: Any]] ?? []).first { ($0["is_primary"] as? Bool) == true }
        XCTAssertEqual(primary?["channel_id"] as? String, "display:1", "the video channel is the primary one: \(stored)")
        let left = (FileManager.default.enumerator(atPath: out)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".ts") }
        XCTAssertEqual(left, [], "acknowledged chunks leave the directory")
    }

    /// A session the endpoint does not know (for this token's account): refused for good on
    /// the first hello (close 4004), reported as upload-failed with UPLOAD_REFUSED; the upload
    /// stops instead of retrying, and capture goes on into the spool, which keeps every chunk.
    func testASessionTheEndpointDoesNotKnowIsRefusedForGood() throws {
        let rig = try TestRig.shared()
        let endpoint = try LiveEndpoint(name: "refused")
        try endpoint.start()
        defer { endpoint.terminate() }
        let daemon = try DaemonProcess(rig: rig, name: "uplink-refused")
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        let session = "cap-00000000000000000000000000000000"
        _ = try client.ok("startRecording", [
            "sessionId": .string(session), "uploadToken": .string(try endpoint.mintToken()),
            "endpoint": .string(endpoint.baseURL), "channels": .array([.object(["channel_id": "display:1"])]),
        ])
        let failed = try XCTUnwrap(try client.event(.uploadFailed, within: 10), "no upload-failed:\n\(daemon.log)")
        XCTAssertEqual(failed.uploadFailed?.code, .uploadRefused)
        XCTAssertEqual(failed.uploadFailed?.closeCode, 4004, "\(failed)")
        Thread.sleep(forTimeInterval: 2)
        let upload = try XCTUnwrap(try client.ok(.getStatus, as: StatusResult.self).upload)
        XCTAssertEqual(upload.phase, .stopped, "\(upload)")
        XCTAssertEqual(upload.connections, 0, "never welcomed: \(upload)")
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let spooled = Self.spooledChunks(stopped)["display:1"] ?? 0
        XCTAssertGreaterThanOrEqual(spooled, 2)
        let left = (FileManager.default.enumerator(atPath: daemon.sessionDirectory(session))?.allObjects as? [String] ?? [])
            .filter { $0.hasSuffix(".ts") }
        XCTAssertEqual(left.count, spooled, "the spool keeps every chunk")
        XCTAssertEqual(daemon.terminate(), 0)
    }
}
