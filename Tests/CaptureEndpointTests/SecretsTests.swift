import CaptureCore
import SHA256
@testable import CaptureEndpoint
import CaptureTestSupport
import Foundation
import NIOCore
import XCTest

/// The endpoint's cryptography against published vectors and an independent
/// implementation (Python's hmac), and the credentials' first-run behaviour.
final class SecretsTests: XCTestCase {
    private func hex(_ bytes: [UInt8]) -> String { SHA256.hex(bytes) }

    func testHMACSHA256MatchesRFC4231() {
        XCTAssertEqual(hex(Secrets.hmacSHA256(key: [UInt8](repeating: 0x0b, count: 20), message: Array("Hi There".utf8))),
                       "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        XCTAssertEqual(hex(Secrets.hmacSHA256(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))),
                       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        XCTAssertEqual(hex(Secrets.hmacSHA256(key: [UInt8](repeating: 0xaa, count: 131),
                                              message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))),
                       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    func testWebhookSignaturesAgreeWithPythonsHMAC() throws {
        let secretBytes = (0..<32).map { UInt8(($0 * 37 + 11) & 0xff) }
        let secret = "whsec_" + Data(secretBytes).base64EncodedString()
        let signer = try XCTUnwrap(WebhookSigner(secret: secret))
        let body = #"{"type":"capture_session.active","capture_session_id":"cap-1","data":{"ü":"ok"}}"#
        let signature = signer.signature(id: "msg_abc", timestamp: 1_764_590_400, body: body)
        let script = """
            import base64, hashlib, hmac, sys
            key = base64.b64decode(sys.argv[1][len("whsec_"):])
            content = ("msg_abc.1764590400." + sys.argv[2]).encode()
            print("v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode())
            """
        let python = try runProcess("/usr/bin/python3", ["-c", script, secret, body], timeout: .seconds(20))
        XCTAssertEqual(python.status, 0, python.stderr)
        XCTAssertEqual(signature, python.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        XCTAssertTrue(signer.verify(id: "msg_abc", timestamp: 1_764_590_400, body: body, header: "v1,bogus= " + signature))
        XCTAssertFalse(signer.verify(id: "msg_abc", timestamp: 1_764_590_401, body: body, header: signature))
        XCTAssertFalse(signer.verify(id: "msg_abc", timestamp: 1_764_590_400, body: body + " ", header: signature))
        XCTAssertNil(WebhookSigner(secret: "whsec_short"))
        XCTAssertNil(WebhookSigner(secret: Data(secretBytes).base64EncodedString()))
    }

    func testCredentialsAreRandomAndOnlyTheirHashIsKept() {
        let a = Secrets.newCredential(prefix: "cct_"), b = Secrets.newCredential(prefix: "cct_")
        XCTAssertNotEqual(a, b)
        XCTAssertEqual(a.count, 4 + 43, "32 random bytes, base64url without padding")
        XCTAssertFalse(a.contains("+") || a.contains("/") || a.contains("="))
        XCTAssertEqual(Secrets.storedHash(of: a).count, 64)
        XCTAssertNotEqual(Secrets.storedHash(of: a), Secrets.storedHash(of: b))
    }

    func testAnAPIKeyIsGeneratedOnceStored0600AndReadBackAfterwards() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/endpoint-credentials-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try EndpointCredentials.apiKeys(file: nil, environment: [:], dataDirectory: dir)
        let generated = try XCTUnwrap(first.generated)
        XCTAssertEqual(first.values, [generated])
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/api-key")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        let second = try EndpointCredentials.apiKeys(file: nil, environment: [:], dataDirectory: dir)
        XCTAssertNil(second.generated, "shown once")
        XCTAssertEqual(second.values, [generated])

        let fromEnvironment = try EndpointCredentials.apiKeys(
            file: nil, environment: [EndpointCredentials.apiKeyEnvironment: "env-key-0123456789abcdef"], dataDirectory: dir)
        XCTAssertEqual(fromEnvironment.values, ["env-key-0123456789abcdef"])
        let keyFile = dir + "/keys"
        try "# two accounts\nkey-one-0123456789abcdef\n\n  key-two-0123456789abcdef  \n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        // Readable by others: refused (the keys are every account's).
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: keyFile)
        XCTAssertThrowsError(try EndpointCredentials.apiKeys(file: keyFile, environment: [:], dataDirectory: dir)) { error in
            XCTAssertEqual((error as? CaptureError)?.code, .permissionDenied)
            XCTAssertTrue("\(error)".contains("chmod 600"), "\(error)")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        let fromFile = try EndpointCredentials.apiKeys(file: keyFile, environment: [:], dataDirectory: dir)
        XCTAssertEqual(fromFile.values, ["key-one-0123456789abcdef", "key-two-0123456789abcdef"])
        XCTAssertNotEqual(Account(apiKey: fromFile.values[0]), Account(apiKey: fromFile.values[1]))
        try "short\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: keyFile)
        XCTAssertThrowsError(try EndpointCredentials.apiKeys(file: keyFile, environment: [:], dataDirectory: dir))
        XCTAssertThrowsError(try EndpointCredentials.apiKeys(file: dir + "/missing", environment: [:], dataDirectory: dir))

        let secret = try EndpointCredentials.webhookSecret(file: nil, environment: [:], dataDirectory: dir)
        XCTAssertNotNil(secret.generated)
        XCTAssertNotNil(WebhookSigner(secret: secret.values[0]))
        XCTAssertThrowsError(try EndpointCredentials.webhookSecret(
            file: nil, environment: [EndpointCredentials.webhookSecretEnvironment: "plain"], dataDirectory: dir))
    }

    /// The real endpoint's first run generates its API key and webhook secret and says where
    /// they are, never what they are (its stderr is the journal under systemd).
    func testGeneratedSecretsAreNeverPrinted() throws {
        let dir = FileManager.default.temporaryDirectory.path + "/endpoint-first-run-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BuiltProduct.path("capture-endpoint"))
        process.arguments = ["--data-dir", dir + "/data", "--port", "\(try Loopback.freePort())"]
        var environment = ProcessInfo.processInfo.environment
        environment[EndpointCredentials.apiKeyEnvironment] = nil
        environment[EndpointCredentials.webhookSecretEnvironment] = nil
        process.environment = environment
        FileManager.default.createFile(atPath: dir + "/stderr", contents: nil)
        process.standardError = FileHandle(forWritingAtPath: dir + "/stderr")
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let deadline = Date().addingTimeInterval(20)
        var stderr = ""
        while Date() < deadline {
            stderr = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
            if stderr.contains("listening") { break }
            usleep(50_000)
        }
        let key = try String(contentsOfFile: dir + "/data/api-key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let secret = try String(contentsOfFile: dir + "/data/webhook-secret", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(key.hasPrefix("cek_") && secret.hasPrefix("whsec_"))
        XCTAssertTrue(stderr.contains(dir + "/data/api-key") && stderr.contains(dir + "/data/webhook-secret"), stderr)
        XCTAssertFalse(stderr.contains(key), "the API key was printed")
        XCTAssertFalse(stderr.contains(String(secret.dropFirst(6).prefix(12))), "the webhook secret was printed")
    }

    func testOpenSSLsChunkDigestIsThePortableSHA256() {
        var rng = SystemRandomNumberGenerator()
        for size in [0, 1, 55, 56, 63, 64, 65, 1000, 183_000, 1 << 20] {
            let bytes = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes.withUnsafeBytes { raw in
                XCTAssertEqual(ChunkDigest.sha256Hex(raw), SHA256.hexDigest(raw), "\(size) bytes")
            }
        }
        XCTAssertEqual(Array("abc".utf8).withUnsafeBytes { ChunkDigest.sha256Hex($0) },
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testWebhookBackoffDoublesUpToItsCap() {
        let delays = (1...8).map { WebhookDispatcher.backoff(afterAttempts: $0, initialMs: 1000, maxMs: 20_000) }
        XCTAssertEqual(delays, [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000])
    }
}

/// What the per-address connection limit counts by.
final class AddressKeyTests: XCTestCase {
    func testIPv4AndMappedIPv4AreTheAddressAndIPv6IsItsSlash64() throws {
        XCTAssertEqual(UplinkHub.addressKey(try SocketAddress(ipAddress: "192.0.2.7", port: 1)), "192.0.2.7")
        XCTAssertEqual(UplinkHub.addressKey(try SocketAddress(ipAddress: "::ffff:192.0.2.7", port: 1)), "192.0.2.7")
        XCTAssertEqual(UplinkHub.addressKey(try SocketAddress(ipAddress: "2001:db8:1:2:3:4:5:6", port: 1)), "20:1:d:b8:0:1:0:2::/64")
        XCTAssertEqual(UplinkHub.addressKey(try SocketAddress(ipAddress: "2001:db8:1:2:ffff::1", port: 1)),
                       UplinkHub.addressKey(try SocketAddress(ipAddress: "2001:db8:1:2::9", port: 2)), "one /64")
        XCTAssertEqual(UplinkHub.addressKey(nil), "?")
    }
}
