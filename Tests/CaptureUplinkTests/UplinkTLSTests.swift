import CaptureCore
import CaptureUplink
import Foundation
import Synchronization
import WebSocketUplink
import XCTest

/// wss:// verifies the endpoint's certificate by default: a self-signed one (a real
/// `openssl s_server` on loopback) is refused in the TLS handshake, and trusted once its
/// certificate is the uplink's `caFile` (CaptureDaemonTests.UplinkTLSSessionTests: welcomed and
/// acknowledged end to end).
final class UplinkTLSTests: XCTestCase {
    func testSelfSignedCertificateIsRefusedUnlessTrusted() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/uplink-tls-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let made = Process()
        made.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        made.arguments = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem",
                          "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
        made.standardOutput = FileHandle.nullDevice
        made.standardError = FileHandle.nullDevice
        try made.run()
        made.waitUntilExit()
        XCTAssertEqual(made.terminationStatus, 0)

        let port = 20_000 + Int(getpid() % 20_000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        server.arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", dir + "/cert.pem", "-key", dir + "/key.pem",
                            "-www", "-quiet"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        usleep(500_000)

        let untrusted = try firstDrop(port: port, caFile: nil, directory: dir)
        XCTAssertTrue(untrusted.lowercased().contains("verif") || untrusted.lowercased().contains("certificate")
                      || untrusted.lowercased().contains("ssl") || untrusted.lowercased().contains("tls"),
                      "refused in the handshake: \(untrusted)")
        let trusted = try firstDrop(port: port, caFile: dir + "/cert.pem", directory: dir)
        XCTAssertNotEqual(trusted, untrusted, "trusted, the TLS handshake passes and the failure is the server's answer")
        XCTAssertFalse(trusted.lowercased().contains("verif"), trusted)
    }

    /// Connects once to wss://127.0.0.1:port and returns why the first connection ended.
    private func firstDrop(port: Int, caFile: String?, directory: String) throws -> String {
        let reason = Mutex<String?>(nil)
        let dropped = DispatchSemaphore(value: 0)
        var config = SessionUplink.Configuration(
            target: try UplinkTarget(endpoint: "wss://127.0.0.1:\(port)"), sessionId: "cap-tls",
            channels: [UplinkChannel(channelId: "mic:default", mediaType: .audio, codec: "aac", chunkDurationNs: 1_000_000_000)],
            sessionDirectory: directory)
        config.caFile = caFile
        let uplink = try SessionUplink(config, token: "cct_tls") { report in
            switch report {
            case .disconnected(_, let why, _), .refused(_, let why):
                let first = reason.withLock { r -> Bool in
                    guard r == nil else { return false }
                    r = why
                    return true
                }
                if first { dropped.signal() }
            default: break
            }
        }
        uplink.start()
        defer { uplink.stop() }
        XCTAssertEqual(dropped.wait(timeout: .now() + 20), .success, "no answer from the TLS server")
        return reason.withLock { $0 } ?? ""
    }
}
