import EndpointClient
import CaptureCore
import CaptureEndpoint
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A real endpoint (real SQLite in a fresh data directory, real routers) for a test.
struct EndpointHarness {
    static let keyA = "cek_test_account_a_0123456789abcdef"
    static let keyB = "cek_test_account_b_0123456789abcdef"
    static let webhookSecret = "whsec_" + Data((0..<32).map { UInt8($0 * 3) }).base64EncodedString()

    let dataDirectory: String
    var configuration: EndpointConfiguration

    init(_ name: String = #function, configure: (inout EndpointConfiguration) -> Void = { _ in }) {
        let base = FileManager.default.temporaryDirectory.path + "/capture-endpoint-tests"
        try? FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        let dir = base + "/" + name.filter { $0.isLetter || $0.isNumber } + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        dataDirectory = dir
        configuration = EndpointConfiguration(dataDirectory: dir, apiKeys: [Self.keyA, Self.keyB],
                                              webhookSecret: Self.webhookSecret)
        configuration.port = 0
        // The tests' receivers are on loopback; CallbackTargetTests turns this off.
        configuration.allowPrivateWebhookTargets = true
        configure(&configuration)
    }

    static var logger: Logger {
        var logger = Logger(label: "endpoint-test")
        logger.logLevel = ProcessInfo.processInfo.environment["ENDPOINT_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .warning
        return logger
    }

    func build() throws -> (some ApplicationProtocol, EndpointComponents) {
        try buildApplication(configuration, logger: Self.logger)
    }

    /// As `build()`, with every log entry at `error` or above also kept in `errors`.
    func build(keepingErrorsIn errors: KeptLog) throws -> (some ApplicationProtocol, EndpointComponents) {
        var logger = Logger(label: "endpoint-test") { label in
            MultiplexLogHandler([StreamLogHandler.standardError(label: label), errors.handler])
        }
        logger.logLevel = Self.logger.logLevel
        return try buildApplication(configuration, logger: logger)
    }

    func remove() {
        guard ProcessInfo.processInfo.environment["ENDPOINT_TEST_KEEP"] == nil else { return }
        try? FileManager.default.removeItem(atPath: dataDirectory)
        // The shared parent goes with the last one (rmdir refuses while another test's is in it).
        _ = rmdir((dataDirectory as NSString).deletingLastPathComponent)
    }
}

/// The entries a logger logged at or above a level, kept in memory. At `.error` (what
/// `build(keepingErrorsIn:)` keeps): a request a client got wrong is the client's error,
/// answered with a status, and logged below `error`, which is kept for faults of the endpoint
/// itself (so that an operator's alert on it means something). At `.debug`: what a client
/// did, printed when its test fails.
final class KeptLog: Sendable {
    private let entries = Mutex<[String]>([])
    let minimumLevel: Logger.Level

    init(from minimumLevel: Logger.Level) { self.minimumLevel = minimumLevel }

    var all: [String] { entries.withLock { $0 } }

    /// A handler that keeps entries here (a value: loggers copy and change their handlers).
    var handler: some LogHandler { Keeper(log: self) }

    /// A logger that logs into this (only).
    func logger(label: String) -> Logger {
        var logger = Logger(label: label) { _ in self.handler }
        logger.logLevel = minimumLevel
        return logger
    }

    private struct Keeper: LogHandler {
        let log: KeptLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            guard event.level >= log.minimumLevel else { return }
            let line = "\(WallClock.iso8601(nanoseconds: WallClock.now())) \(event.level) \(event.message) \(event.metadata ?? [:])"
            log.entries.withLock { $0.append(line) }
        }
    }
}

extension EndpointTestClient {
    /// A JSON request with an API key (or none), returning status and parsed body.
    func call(_ method: HTTPRequest.Method, _ uri: String, key: String? = EndpointHarness.keyA, json: String? = nil,
              headers extra: HTTPFields = [:]) async throws -> (status: HTTPResponse.Status, body: [String: Any], raw: String) {
        var headers = extra
        if let key { headers[HTTPField.Name("x-access-token")!] = key }
        if json != nil, headers[.contentType] == nil { headers[.contentType] = "application/json" }
        let response = try await executeRequest(uri: uri, method: method, headers: headers,
                                                body: json.map { ByteBuffer(string: $0) })
        let raw = String(buffer: response.body)
        let body = (try? JSONSerialization.jsonObject(with: Data(raw.utf8))) as? [String: Any] ?? [:]
        return (response.status, body, raw)
    }
}

extension EndpointTestClient {
    /// The account's webhook secret, new (`POST /capture/webhook/secret`), as a signer.
    func webhookSigner(key: String = EndpointHarness.keyA) async throws -> WebhookSigner {
        let answer = try await call(.post, "/capture/webhook/secret", key: key)
        XCTAssertEqual(answer.status, .ok, answer.raw)
        return try XCTUnwrap(WebhookSigner(secret: dataOf(answer.body)["secret"] as? String ?? ""), answer.raw)
    }
}

/// The standard error body: `success: false`, a message, the code.
func assertErrorBody(_ body: [String: Any], _ code: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(body["success"] as? Bool, false, "\(body)", file: file, line: line)
    XCTAssertEqual(body["error_code"] as? String, code, "\(body)", file: file, line: line)
    XCTAssertFalse((body["message"] as? String ?? "").isEmpty, "\(body)", file: file, line: line)
}

func dataOf(_ body: [String: Any]) -> [String: Any] { body["data"] as? [String: Any] ?? [:] }
