import EndpointClient
import CaptureCore
import SHA256
import CaptureEndpoint
import CaptureTestSupport
import CaptureUplink
import CaptureUplinkReplay
import Foundation
import GRDB
import Logging
import NIOCore
import XCTest
import HTTPTypes

/// The real capture-endpoint binary as a process of its own, for the tests that kill it.
final class EndpointProcess {
    let dataDirectory: String
    let port: Int
    private(set) var process: Process?

    /// RLIMIT_DATA for the process (its heap and private mappings), so that a regression
    /// fails the test rather than the machine.
    let dataLimitBytes: Int?

    /// Where its log goes (nil: nowhere).
    let logPath: String?

    /// More command-line arguments (`--limit ...`).
    let extraArguments: [String]

    /// More environment for the next `start()` (fault injection).
    var extraEnvironment: [String: String] = [:]

    /// `--log-level` (what reaches `logPath`).
    var logLevel = "warning"

    init(dataDirectory: String, port: Int, dataLimitBytes: Int? = nil, logPath: String? = nil, extraArguments: [String] = []) {
        self.dataDirectory = dataDirectory
        self.port = port
        self.dataLimitBytes = dataLimitBytes
        self.logPath = logPath
        self.extraArguments = extraArguments
    }

    /// The process's peak resident memory so far (VmHWM), in bytes.
    var peakResidentBytes: Int? {
        guard let pid = process?.processIdentifier,
              let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kB = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return nil }
        return kB * 1024
    }

    func start() throws {
        let process = Process()
        let arguments = ["--data-dir", dataDirectory, "--port", "\(port)", "--log-level", logLevel,
                         "--allow-private-webhook-targets"] + extraArguments
        if let dataLimitBytes {
            // prlimit execs the endpoint: the process is the endpoint.
            process.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
            process.arguments = ["--data=\(dataLimitBytes)", "--", BuiltProduct.path("capture-endpoint")] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: BuiltProduct.path("capture-endpoint"))
            process.arguments = arguments
        }
        var environment = ProcessInfo.processInfo.environment
        environment[EndpointCredentials.apiKeyEnvironment] = EndpointHarness.keyA
        environment[EndpointCredentials.webhookSecretEnvironment] = EndpointHarness.webhookSecret
        environment.merge(extraEnvironment) { _, extra in extra }
        process.environment = environment
        process.standardOutput = FileHandle.nullDevice
        if let logPath {
            if !FileManager.default.fileExists(atPath: logPath) {
                FileManager.default.createFile(atPath: logPath, contents: nil)
            }
            // Appended to: a restarted endpoint's log follows its predecessor's.
            let log = FileHandle(forWritingAtPath: logPath)
            log?.seekToEndOfFile()
            process.standardError = log
        } else {
            process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        }
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let socket = try? RawSocket(port: port) {
                _ = socket.send(Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
                if String(decoding: socket.readAll(), as: UTF8.self).hasPrefix("HTTP/1.1 200") { return }
            }
            usleep(20_000)
        }
        throw CaptureError(.timeout, "capture-endpoint did not come up on port \(port)")
    }

    func kill9() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func terminate() -> Int32 {
        guard let process else { return -1 }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }
}

/// Nothing is lost or doubled when the endpoint dies mid-stream: SIGKILLed
/// five times while a client streams a real recording, restarted each time,
/// the client resuming from each welcome.
final class EndpointRestartTests: XCTestCase {
    func testFiveSIGKILLsWhileStreamingLoseAndDoubleNothing() async throws {
        let spool = try RecordedFixture.spool()
        let directory = FileManager.default.temporaryDirectory.path + "/endpoint-restart-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The endpoints' log (all five restarts, at info) and the client's (at debug) are
        // printed if the replay does not end.
        let endpointLog = directory + ".log"
        defer { try? FileManager.default.removeItem(atPath: endpointLog) }
        let endpoint = EndpointProcess(dataDirectory: directory, port: try Loopback.freePort(), logPath: endpointLog)
        endpoint.logLevel = "info"
        try endpoint.start()
        defer { _ = endpoint.terminate() }

        let (session, token) = try await HTTPJSON.newSession(port: endpoint.port, endUser: "restart")

        var options = ReplayOptions(url: "ws://127.0.0.1:\(endpoint.port)\(UplinkProtocol.path)", token: token, sessionId: session)
        options.speed = 4  // 20 s of recording in about 5 s
        options.reconnectDelay = .milliseconds(100)
        let clientLog = KeptLog(from: .debug)
        let logger = clientLog.logger(label: "restart")
        let replay = Task { [options, logger] in await UplinkReplayer.run(spool, options: options, logger: logger) }
        for kill in 1...5 {
            try await Task.sleep(for: .milliseconds(800))
            logger.debug("test: SIGKILL \(kill) of 5")
            endpoint.kill9()
            try endpoint.start()
        }
        // A replay that stops making progress must fail here, not hang the run. Seen twice under
        // load (a load of 18; a CI run): the session went silent after a kill and the replay
        // never ended. Not reproduced since (loaded by three busy loops, four runs): the logs
        // say where it stood if it comes back.
        let report: ReplayReport
        do {
            report = try await value(of: replay, within: .seconds(180), "the replay across five kills")
        } catch {
            print("the client's log:\n" + clientLog.all.joined(separator: "\n"))
            let log = (try? String(contentsOfFile: endpointLog, encoding: .utf8)) ?? "(none)"
            print("the endpoints' log, the last 80 lines:\n" + log.split(separator: "\n").suffix(80).joined(separator: "\n"))
            throw error
        }
        XCTAssertTrue(report.ended, "\(report.closeCodes) \(report.failure ?? "")")
        XCTAssertGreaterThanOrEqual(report.reconnects, 5, "every kill cost the client its connection")
        XCTAssertEqual(report.errors, [])
        print("restart: \(report.reconnects) reconnects, \(report.acked) acks (\(report.duplicates) duplicates), close codes \(report.closeCodes)")

        // After a clean stop the database holds each chunk once, and each file is the recorded bytes.
        XCTAssertEqual(endpoint.terminate(), 0, "SIGTERM shuts down cleanly")
        let database = try DatabaseQueue(path: directory + "/endpoint.sqlite")
        let rows = try database.read { db in
            try Row.fetchAll(db, sql: "SELECT channel_id, seq, sha256, file FROM chunks WHERE session_id = ? ORDER BY channel_id, seq",
                             arguments: [session])
        }
        XCTAssertEqual(rows.count, spool.chunkCount, "no chunk missing, none twice")
        for row in rows {
            let channel: String = row["channel_id"], seq: Int = row["seq"], file: String = row["file"]
            let recorded = try XCTUnwrap(spool.chunks[channel]?.first { $0.metadata.seq == seq })
            XCTAssertEqual(row["sha256"] as String, recorded.metadata.sha256)
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file))
            XCTAssertEqual(data.withUnsafeBytes { SHA256.hexDigest($0) }, recorded.metadata.sha256, file)
        }
        let status = try await database.read { try String.fetchOne($0, sql: "SELECT status FROM sessions WHERE id = ?", arguments: [session]) }
        XCTAssertEqual(status, "stopped")
    }
}

/// An export the endpoint was killed in the middle of is finished when it comes back, with
/// nothing left of the interrupted attempt.
final class InterruptedExportTests: XCTestCase {
    func testAnExportACrashInterruptedIsResumedAtStartUp() async throws {
        let spool = try RecordedFixture.spool()
        let directory = FileManager.default.temporaryDirectory.path + "/endpoint-export-crash-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let marker = directory + "-held"
        try? FileManager.default.removeItem(atPath: marker)
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let endpoint = EndpointProcess(dataDirectory: directory, port: try Loopback.freePort())
        // The first endpoint holds every export between writing its MP4 and publishing it.
        endpoint.extraEnvironment = ["CAPTURE_ENDPOINT_TEST_EXPORT_HOLD": marker]
        try endpoint.start()
        defer { _ = endpoint.terminate() }

        let (session, token) = try await HTTPJSON.newSession(port: endpoint.port, endUser: "export-crash")
        var options = ReplayOptions(url: "ws://127.0.0.1:\(endpoint.port)\(UplinkProtocol.path)", token: token, sessionId: session)
        options.speed = 0
        var logger = Logger(label: "export-crash")
        logger.logLevel = .critical
        let replay = Task { [options, logger] in await UplinkReplayer.run(spool, options: options, logger: logger) }
        let report = try await value(of: replay, within: .seconds(180), "the replay")
        XCTAssertTrue(report.ended, "\(report)")

        let exportURL = "http://127.0.0.1:\(endpoint.port)/collection/default/capture/session/\(session)/export"
        let begun = try await HTTPJSON.post(exportURL, key: EndpointHarness.keyA, body: "{}")
        XCTAssertEqual((begun["data"] as? [String: Any])?["export_status"] as? String, "exporting", "\(begun)")
        let deadline = ContinuousClock.now + .seconds(60)
        while !FileManager.default.fileExists(atPath: marker) {
            XCTAssertLessThan(ContinuousClock.now, deadline, "the export never reached its hold")
            if ContinuousClock.now >= deadline { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        // Killed with the whole MP4 written but not published.
        let temporary = try String(contentsOfFile: marker, encoding: .utf8)
        XCTAssertTrue(FileManager.default.fileExists(atPath: temporary), temporary)
        endpoint.kill9()

        endpoint.extraEnvironment = [:]
        try endpoint.start()
        var answer = try await HTTPJSON.post(exportURL, key: EndpointHarness.keyA, body: "{}")
        let resumeDeadline = ContinuousClock.now + .seconds(60)
        while (answer["data"] as? [String: Any])?["export_status"] as? String == "exporting", ContinuousClock.now < resumeDeadline {
            try await Task.sleep(for: .milliseconds(100))
            answer = try await HTTPJSON.post(exportURL, key: EndpointHarness.keyA, body: "{}")
        }
        let data = try XCTUnwrap(answer["data"] as? [String: Any], "\(answer)")
        XCTAssertEqual(data["export_status"] as? String, "exported", "\(answer)")

        // One published MP4 in the session's export directory, and nothing of the attempt the
        // crash interrupted.
        let exports = directory + "/exports/" + session
        let names = try FileManager.default.contentsOfDirectory(atPath: exports)
        XCTAssertEqual(names.filter { $0.hasSuffix(".mp4") && !$0.hasPrefix(".") }.count, 1, "\(names)")
        XCTAssertEqual(names.filter { $0.hasPrefix(".") }, [], "the interrupted attempt's temporary is gone")
        let videoId = try XCTUnwrap(data["video_id"] as? String, "\(data)")
        let mp4 = exports + "/" + videoId + ".mp4"
        let probe = try Media.probe(mp4)
        XCTAssertEqual(probe.streams.map(\.codecType), ["video", "audio", "audio", "audio"])
        XCTAssertEqual(probe.formatDuration, Double(RecordedFixture.seconds), accuracy: 0.3)
        XCTAssertEqual(try Media.decodeErrors(mp4), "")

        // The database counts both attempts: the second is the one the restart resumed.
        XCTAssertEqual(endpoint.terminate(), 0)
        let database = try DatabaseQueue(path: directory + "/endpoint.sqlite")
        let attempts = try await database.read {
            try Int.fetchOne($0, sql: "SELECT export_attempts FROM sessions WHERE id = ?", arguments: [session])
        }
        XCTAssertEqual(attempts, 2)
    }
}

/// A JSON POST to an endpoint in another process.
enum HTTPJSON {
    /// A new session of account A and a client token for it.
    static func newSession(port: Int, endUser: String) async throws -> (session: String, token: String) {
        let base = "http://127.0.0.1:\(port)"
        let created = try await post(base + "/collection/default/capture/session", key: EndpointHarness.keyA,
                                     body: "{\"end_user_id\": \"\(endUser)\"}")
        let session = try XCTUnwrap((created["data"] as? [String: Any])?["session_id"] as? String)
        let minted = try await post(base + "/capture/session/token", key: EndpointHarness.keyA, body: "{}")
        return (session, try XCTUnwrap((minted["data"] as? [String: Any])?["token"] as? String))
    }

    static func get(_ url: String) async throws -> [String: Any] {
        try await exchange(url, method: .get, headers: [:], body: nil)
    }

    static func post(_ url: String, key: String, body: String) async throws -> [String: Any] {
        try await exchange(url, method: .post,
                           headers: [HTTPField.Name("x-access-token")!: key, .contentType: "application/json"],
                           body: ByteBuffer(string: body))
    }

    private static func exchange(_ url: String, method: HTTPRequest.Method, headers: HTTPFields, body: ByteBuffer?)
        async throws -> [String: Any] {
        guard let parts = URLComponents(string: url), let port = parts.port else {
            throw CaptureError(.internalError, "not an http://127.0.0.1:port URL: \(url)")
        }
        let uri = parts.percentEncodedPath + (parts.percentEncodedQuery.map { "?" + $0 } ?? "")
        let response = try await EndpointHTTPClient(port: port, timeout: .seconds(30))
            .execute(uri: uri, method: method, headers: headers, body: body)
        guard let object = try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any] else {
            throw CaptureError(.internalError, "\(method) \(url): not JSON")
        }
        return object
    }
}
