import CaptureCore
import CaptureSystem
import SHA256
import CaptureTestSupport
import Foundation
import GRDB
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The real capture-endpoint binary as a process of its own, with its own data
/// directory, driven over its REST API the way a backend drives it; what it
/// stored is read back from its SQLite database and its chunk files.
final class LiveEndpoint {
    static let apiKey = "cek_agent_uplink_tests_0123456789abcdef"
    let dataDirectory: String
    let port: Int
    let logPath: String
    private(set) var process: Process?
    var extraArguments: [String] = []

    init(name: String, port: Int? = nil) throws {
        dataDirectory = FileManager.default.temporaryDirectory.path + "/capture-live-endpoint-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        logPath = dataDirectory + ".log"
        self.port = try port ?? Loopback.freePort()
    }

    deinit {
        kill9()
        try? FileManager.default.removeItem(atPath: dataDirectory)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: BuiltProduct.path("capture-endpoint"))
        process.arguments = ["--data-dir", dataDirectory, "--port", "\(port)", "--log-level", "notice",
                             "--allow-private-webhook-targets"] + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment["CAPTURE_ENDPOINT_API_KEY"] = Self.apiKey
        environment["CAPTURE_ENDPOINT_WEBHOOK_SECRET"] = "whsec_" + Data((0..<32).map { UInt8($0) }).base64EncodedString()
        process.environment = environment
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let (status, _) = try? request("GET", "/health"), status == 200 { return }
            usleep(20_000)
        }
        throw CaptureError(.timeout, "capture-endpoint did not come up on port \(port); log:\n\(log)")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func kill9() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    @discardableResult
    func terminate() -> Int32 {
        guard let process else { return -1 }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
        return process.terminationStatus
    }

    // MARK: The REST API (what a backend does)

    func createSession() throws -> String {
        let body = try json("POST", "/collection/default/capture/session", #"{"end_user_id": "uplink-tests"}"#)
        return try XCTUnwrap((body["data"] as? [String: Any])?["session_id"] as? String)
    }

    func mintToken(expiresIn: Int = 3600) throws -> String {
        let body = try json("POST", "/capture/session/token", #"{"expires_in": \#(expiresIn)}"#)
        return try XCTUnwrap((body["data"] as? [String: Any])?["token"] as? String)
    }

    func revoke(_ token: String) throws {
        _ = try json("POST", "/capture/session/token/revoke", #"{"token": "\#(token)"}"#)
    }

    func session(_ id: String) throws -> [String: Any] {
        try XCTUnwrap(try json("GET", "/collection/default/capture/session/\(id)")["data"] as? [String: Any])
    }

    /// Exports the session and waits for the MP4; returns its path.
    func export(_ id: String, timeout: Double = 120) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let data = try XCTUnwrap(try json("POST", "/collection/default/capture/session/\(id)/export")["data"] as? [String: Any])
            if data["export_status"] as? String == "exported", let video = data["video_id"] as? String {
                return dataDirectory + "/exports/\(id)/\(video).mp4"
            }
            usleep(200_000)
        }
        throw CaptureError(.timeout, "the export of \(id) did not finish in \(timeout) s")
    }

    func json(_ method: String, _ path: String, _ body: String? = nil) throws -> [String: Any] {
        let (status, data) = try request(method, path, body: body)
        guard (200..<300).contains(status) else {
            throw CaptureError(.ioError, "\(method) \(path): HTTP \(status) \(String(decoding: data, as: UTF8.self))")
        }
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// One HTTP/1.1 request over a fresh loopback connection (Connection: close).
    func request(_ method: String, _ path: String, body: String? = nil) throws -> (Int, Data) {
        guard let fd = Loopback.connect(port: port) else { throw CaptureError(.ioError, "connect to \(port) refused") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let payload = Array((body ?? "").utf8)
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nx-access-token: \(Self.apiKey)\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(payload.count)\r\n" }
        let bytes = Array((head + "\r\n").utf8) + payload
        let sent = bytes.withUnsafeBytes { raw in Result { () throws(SystemCallError) in try POSIX.writeAll(fd, raw) } }
        try sent.get()
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n"), let status = Int(text.split(separator: " ").dropFirst().first ?? "") else {
            throw CaptureError(.ioError, "\(method) \(path): no HTTP response")
        }
        var bodyBytes = Array(text[split.upperBound...].utf8)
        if text[..<split.lowerBound].lowercased().contains("transfer-encoding: chunked") {
            bodyBytes = Self.dechunk(bodyBytes)
        }
        return (status, Data(bodyBytes))
    }

    private static func dechunk(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            guard let lineEnd = (i..<bytes.count - 1).first(where: { bytes[$0] == 13 && bytes[$0 + 1] == 10 }),
                  let size = Int(String(decoding: bytes[i..<lineEnd], as: UTF8.self), radix: 16), size > 0 else { break }
            out += bytes[(lineEnd + 2)..<min(bytes.count, lineEnd + 2 + size)]
            i = lineEnd + 2 + size + 2
        }
        return out
    }

    // MARK: What it stored

    struct StoredChunk {
        var channelId: String
        var seq: Int
        var sha256: String
        var bytes: Int
        var durationNs: Int64
        var isFinal: Bool
        var file: String
        var captureTimeUnixNs: Int64
        var storedAtMs: Int64
    }

    func storedChunks(_ session: String) throws -> [StoredChunk] {
        let database = try DatabaseQueue(path: dataDirectory + "/endpoint.sqlite", configuration: {
            var c = Configuration()
            c.readonly = true
            return c
        }())
        return try database.read { db in
            try Row.fetchAll(db, sql: """
                SELECT channel_id, seq, sha256, bytes, duration_ns, is_final, file, capture_time_unix_ns, stored_at
                FROM chunks WHERE session_id = ? ORDER BY channel_id, seq
                """, arguments: [session]).map {
                StoredChunk(channelId: $0["channel_id"], seq: $0["seq"], sha256: $0["sha256"], bytes: $0["bytes"],
                            durationNs: $0["duration_ns"], isFinal: $0["is_final"], file: $0["file"],
                            captureTimeUnixNs: $0["capture_time_unix_ns"], storedAtMs: $0["stored_at"])
            }
        }
    }

    /// Checks what the endpoint stored for a session: per channel seqs 0..<n without a gap
    /// or a double; exactly one final chunk, the last (`interrupted`: at most one, and if
    /// there is one it is the last: a channel cut short may have none); every file's SHA-256
    /// what its row (the agent's header) says. Returns the chunk count per channel.
    @discardableResult
    func verifyStored(_ session: String, interrupted: Bool = false, file: StaticString = #filePath,
                      line: UInt = #line) throws -> [String: Int] {
        let chunks = try storedChunks(session)
        var counts: [String: Int] = [:]
        for (channel, rows) in Dictionary(grouping: chunks, by: \.channelId) {
            XCTAssertEqual(rows.map(\.seq), Array(0..<rows.count), "\(channel): seqs without gaps or doubles", file: file, line: line)
            let finals = rows.indices.filter { rows[$0].isFinal }
            if interrupted {
                XCTAssertLessThanOrEqual(finals.count, 1, "\(channel): at most one final chunk", file: file, line: line)
            } else {
                XCTAssertEqual(finals.count, 1, "\(channel): one final chunk", file: file, line: line)
            }
            if let final = finals.first {
                XCTAssertEqual(final, rows.count - 1, "\(channel): the final chunk is the last", file: file, line: line)
            }
            for row in rows {
                let data = try Data(contentsOf: URL(fileURLWithPath: dataDirectory + "/" + row.file))
                XCTAssertEqual(data.count, row.bytes, "\(channel) #\(row.seq) size", file: file, line: line)
                XCTAssertEqual(data.withUnsafeBytes { SHA256.hexDigest($0) }, row.sha256, "\(channel) #\(row.seq) hash",
                               file: file, line: line)
            }
            counts[channel] = rows.count
        }
        return counts
    }
}
