import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// wss:// end to end: a real capture-endpoint behind a TLS terminator (socat with a
/// self-signed certificate for 127.0.0.1), the daemon trusting that certificate through its
/// `ca_file` setting: the upload is welcomed, every chunk acknowledged and stored.
/// (UplinkTLSTests shows the same certificate refused without `ca_file`.)
final class UplinkTLSSessionTests: XCTestCase {
    func testAWssUploadWithCAFileIsWelcomedAndAcknowledged() throws {
        let rig = try TestRig.shared()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("uplink-wss-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = try runProcess("/usr/bin/openssl", [
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
            "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ], timeout: .seconds(60))
        XCTAssertEqual(made.status, 0, made.stderr)

        let endpoint = try LiveEndpoint(name: "wss")
        try endpoint.start()
        defer { endpoint.terminate() }
        let tlsPort = try Loopback.freePort()
        let terminator = Process()
        terminator.executableURL = URL(fileURLWithPath: "/usr/bin/socat")
        terminator.arguments = [
            "OPENSSL-LISTEN:\(tlsPort),bind=127.0.0.1,reuseaddr,fork,cert=\(dir)/cert.pem,key=\(dir)/key.pem,verify=0",
            "TCP:127.0.0.1:\(endpoint.port)",
        ]
        terminator.standardOutput = FileHandle.nullDevice
        terminator.standardError = FileHandle.nullDevice
        try terminator.run()
        defer {
            terminator.terminate()
            terminator.waitUntilExit()
        }
        try Loopback.waitForListener(tlsPort)

        let session = try endpoint.createSession()
        let token = try endpoint.mintToken()
        let daemon = try DaemonProcess(rig: rig, name: "wss", arguments: ["--set", "ca_file=\(dir)/cert.pem"])
        defer { _ = daemon.terminate() }
        let client = try daemon.client()
        _ = try client.ok("subscribeEvents")
        _ = try client.ok("startRecording", [
            "sessionId": .string(session), "uploadToken": .string(token),
            "endpoint": .string("https://127.0.0.1:\(tlsPort)"),
            "channels": .array([.object(["channel_id": "display:1"]), .object(["channel_id": "mic:default"])]),
        ])
        let connected = try XCTUnwrap(try client.event(.uploadProgress, within: 10), "no upload-progress:\n\(daemon.log)")
        XCTAssertEqual(connected.uploadProgress?.connected, true, "welcomed over wss: \(connected)")
        XCTAssertEqual(connected.uploadProgress?.endpoint, "wss://127.0.0.1:\(tlsPort)/capture/uplink")
        Thread.sleep(forTimeInterval: 3)
        let stopped = try client.ok(.stopRecording, as: StopRecordingResult.self)
        let complete = try XCTUnwrap(try client.event(.recordingComplete, within: 30), "no recording-complete:\n\(daemon.log)")
        XCTAssertEqual(complete.recordingComplete?.deliveredTo, .endpoint)
        let stored = try endpoint.verifyStored(session)
        XCTAssertEqual(stored, UplinkSessionTests.spooledChunks(stopped), "every chunk acknowledged over wss is stored")
        XCTAssertGreaterThanOrEqual(stored["display:1"] ?? 0, 3)
    }
}
