import CaptureControl
import CaptureCore
import CaptureSystem
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Checks of what the daemon writes, shared by the protocol tests.
enum Wire {
    static let prefix = ControlFraming.prefixBytes

    /// `videodb_recorder|<request JSON>\n`.
    static func line(_ json: String) -> [UInt8] { prefix + Array(json.utf8) + [0x0A] }

    /// Reads one protocol line as JSON; throws (with the line) when it is not one.
    static func decode(_ line: [UInt8]) throws -> JSONValue {
        guard line.starts(with: prefix) else {
            throw CaptureError(.internalError, "not a protocol line: \(String(decoding: line.prefix(300), as: UTF8.self))")
        }
        guard let value = try? JSONCoding.decoder.decode(JSONValue.self, from: Data(line[prefix.count...])),
              case .object = value else {
            throw CaptureError(.internalError, "not a JSON object: \(String(decoding: line.prefix(300), as: UTF8.self))")
        }
        return value
    }

    /// nil when `value` is a well-formed response, else what is wrong with it.
    static func responseProblem(_ value: JSONValue) -> String? {
        guard value["type"] == "response" else { return "type is not response: \(value)" }
        guard value.objectValue?.keys.contains("commandId") == true else { return "no commandId: \(value)" }
        switch value["commandId"] {
        case .string?, .integer?, .null?: break
        default: return "commandId is neither a string, an integer nor null: \(value)"
        }
        switch value["status"]?.stringValue {
        case "success":
            if value["result"] == nil { return "success without result: \(value)" }
            if value["code"] != nil { return "success with a code: \(value)" }
        case "error":
            guard let message = value["result"]?.stringValue, !message.isEmpty else { return "error without a message: \(value)" }
            guard let code = value["code"]?.stringValue, CaptureErrorCode(rawValue: code) != nil else {
                return "error without a known code: \(value)"
            }
        default:
            return "unknown status: \(value)"
        }
        return nil
    }

    /// nil when `value` is a well-formed event.
    /// nil when `value` is an event of the protocol exactly: it reads as its typed payload, and
    /// that encodes back to the very same JSON (no field missing, none unknown, the timestamp
    /// the nanoseconds' own).
    static func eventProblem(_ value: JSONValue) -> String? {
        let event: ControlEvent
        do {
            guard let e = try ControlEvent(message: value) else { return "not an event, or an unknown one: \(value)" }
            event = e
        } catch {
            return "\(error.message): \(value)"
        }
        guard let again = try? JSONValue(encoding: event), again == value else {
            return "the event does not read back as itself: \(value)"
        }
        return nil
    }
}

/// Process facts read from /proc.
enum ProcInfo {
    /// Resident set size in KiB.
    static func rssKiB(_ pid: pid_t) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        }
        return nil
    }

    static func openDescriptors(_ pid: pid_t) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    static func threads(_ pid: pid_t) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task").count) ?? -1
    }
}

extension ControlClient {
    /// The next response (events are skipped), checked for form.
    func nextResponse(within seconds: Double = 10, file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard let raw = try nextLine(timeoutNs: Int64(max(0, deadline.timeIntervalSinceNow) * 1e9)) else { break }
            let value = try Wire.decode(raw)
            if value["type"] == "event" { continue }
            if let problem = Wire.responseProblem(value) { XCTFail(problem, file: file, line: line) }
            return value
        }
        XCTFail(isClosed ? "the daemon closed the connection instead of answering" : "no response within \(seconds) s",
                file: file, line: line)
        throw CaptureError(.timeout, "no response")
    }

    /// The next response must be an error with `code` (and `commandId`, when given).
    @discardableResult
    func expectError(_ code: CaptureErrorCode, commandId: JSONValue? = .null, _ what: String = "",
                     file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try nextResponse(file: file, line: line)
        XCTAssertEqual(r["status"], "error", "\(what): \(r)", file: file, line: line)
        XCTAssertEqual(r["code"]?.stringValue, code.rawValue, "\(what): \(r)", file: file, line: line)
        if let commandId { XCTAssertEqual(r["commandId"], commandId, "\(what): \(r)", file: file, line: line) }
        return r["result"]?.stringValue ?? ""
    }
}

/// A bare Unix stream socket, for what ControlClient does not do (half-close).
final class RawSocket {
    let fd: Int32

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        let r = UnixSocketAddress(path: path)?.connect(fd) ?? -1
        guard fd >= 0, r == 0 else { throw CaptureError(.ioError, "connect \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        XCTAssertEqual(bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }, bytes.count)
    }

    func shutdownWriting() { _ = shutdown(fd, Int32(SHUT_WR)) }

    /// Everything until the peer closes; nil if it did not close within `seconds`.
    func readToEnd(within seconds: Double) -> [UInt8]? {
        let deadline = Date().addingTimeInterval(seconds)
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while Date() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&pfd, 1, 50) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return out }
            out += buffer[0..<n]
        }
        return nil
    }
}

/// Bad input over the real socket of a real daemon (no rig: these are protocol
/// tests). After every test the daemon must still run and answer a fresh client.
final class BadInputTests: XCTestCase {
    private var daemon: DaemonProcess!

    override func setUpWithError() throws {
        daemon = try DaemonProcess(rig: nil, name: "bad-input")
    }

    override func tearDownWithError() throws {
        guard let daemon else { return }
        defer { self.daemon = nil }
        XCTAssertTrue(daemon.process.isRunning, "the daemon died; log:\n\(daemon.log.suffix(4000))")
        guard daemon.process.isRunning else { return }
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self, timeout: .seconds(10)).pong, true)
        XCTAssertEqual(daemon.terminate(), 0, "exit status after SIGTERM")
    }

    /// Waits until the daemon counts `n` clients (ping counts the asking one).
    private func waitForClients(_ n: Int, _ client: ControlClient, timeout: Double = 10) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last = -1
        while Date() < deadline {
            last = try client.ok(.ping, as: DaemonInfo.self).clients
            if last == n { return }
            usleep(20_000)
        }
        XCTFail("the daemon counts \(last) clients, expected \(n)")
    }

    // MARK: malformed requests

    func testMalformedJSONGetsInvalidRequestAndTheConnectionStaysUsable() throws {
        let c = try daemon.client()
        for bad in ["{oops", "{\"command\":\"ping\"", "", "[]", "\"ping\"", "{\"command\":\"ping\"}}", "{command:ping}", "nul"] {
            try c.sendRaw(Wire.line(bad))
            let message = try c.expectError(.invalidRequest, bad)
            XCTAssertFalse(message.isEmpty)
        }
        // Without the prefix, and with a wrong one.
        try c.sendRaw(Array("{\"command\":\"ping\"}\n".utf8))
        XCTAssertTrue(try c.expectError(.invalidRequest).contains("videodb_recorder|"))
        try c.sendRaw(Array("videodb_recorder:{\"command\":\"ping\"}\r\n".utf8))
        try c.expectError(.invalidRequest)
        // A commandId that was readable is echoed even when the command is missing.
        try c.sendRaw(Wire.line(#"{"commandId":"m-1"}"#))
        try c.expectError(.invalidRequest, commandId: "m-1")
        try c.sendRaw(Wire.line(#"{"commandId":99,"command":"ping","params":[1]}"#))
        try c.expectError(.invalidRequest, commandId: 99)
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
        XCTAssertGreaterThanOrEqual(try c.ok(.ping, as: DaemonInfo.self).badRequests, 12)
    }

    func testUnknownCommand() throws {
        let c = try daemon.client()
        for name in ["frobnicate", "Ping", "start_recording", "ping ", "пинг", String(repeating: "x", count: 5000)] {
            let error = try XCTUnwrap(c.failure(name), name)
            XCTAssertEqual(error.code, .unknownCommand, "\(name.prefix(30)): \(error)")
            XCTAssertTrue(error.message.contains("startRecording"), "lists the known commands: \(error.message)")
            XCTAssertLessThan(error.message.utf8.count, 1000, "the echoed name is bounded")
        }
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    func testMissingOrWrongTypedParams() throws {
        let c = try daemon.client()
        let cases: [(String, [String: JSONValue], CaptureErrorCode, String)] = [
            ("pauseTracks", ["tracks": 5], .invalidRequest, "params.tracks"),
            ("resumeTracks", ["tracks": .array(["webcam"])], .invalidRequest, "webcam"),
            ("requestPermission", [:], .invalidRequest, "params.permission"),
            ("requestPermission", ["permission": 1], .invalidRequest, "params.permission"),
            ("requestPermission", ["permission": "camera"], .invalidRequest, "camera"),
            ("updateToken", [:], .invalidRequest, "params.token"),
            ("updateToken", ["token": .array([])], .invalidRequest, "params.token"),
            ("updateToken", ["token": "a b"], .invalidToken, "token"),
            ("updateToken", ["token": "t", "expiresAt": "soon"], .invalidRequest, "params.expiresAt"),
            ("startRecording", ["channels": "display:1"], .invalidRequest, "params.channels"),
            ("startRecording", ["channels": .array([.object(["channel_id": "bogus"])])], .invalidChannels, "bogus"),
            ("startRecording", ["channels": .array([.object(["name": "no id"])])], .invalidRequest, "channel_id"),
            ("startRecording", ["sessionId": 12], .invalidRequest, "params.sessionId"),
            ("startRecording", ["sessionId": "../escape"], .invalidRequest, "session id"),
            ("stopRecording", ["sessionId": .object([:])], .invalidRequest, "params.sessionId"),
            ("subscribeEvents", ["events": "all"], .invalidRequest, "params.events"),
            ("subscribeEvents", ["events": .array(["nope"])], .invalidRequest, "nope"),
            ("unsubscribeEvents", ["events": .array([true])], .invalidRequest, "params.events[0]"),
            ("init", ["apiUrl": 5], .invalidRequest, "params.apiUrl"),
            ("init", ["apiUrl": "not a url"], .invalidRequest, "params.apiUrl"),
        ]
        for (command, params, code, mention) in cases {
            let error = try XCTUnwrap(c.failure(command, params), command)
            XCTAssertEqual(error.code, code, "\(command) \(params): \(error)")
            XCTAssertTrue(error.message.contains(mention), "\(command): '\(error.message)' does not mention \(mention)")
        }
        // Nothing was started by any of them.
        XCTAssertEqual(try c.ok("getStatus")["state"], "idle")
        // Commands that need a session say so.
        XCTAssertEqual(c.failure("pauseTracks")?.code, .invalidState)
        XCTAssertEqual(c.failure("stopRecording")?.code, .invalidState)
    }

    // MARK: size

    func testLineOverOneMiBIsRefusedAndTheConnectionStillWorks() throws {
        let c = try daemon.client()
        // Exactly at the limit: still a request.
        let head = #"{"command":"ping","commandId":"big","params":{"pad":""#
        let tail = #""}}"#
        let pad = ControlFraming.maxLineBytes - Wire.prefix.count - head.utf8.count - tail.utf8.count
        let exact = Wire.line(head + String(repeating: "p", count: pad) + tail)
        XCTAssertEqual(exact.count, ControlFraming.maxLineBytes + 1)
        try c.sendRaw(exact)
        let r = try c.nextResponse()
        XCTAssertEqual(r["commandId"], "big")
        XCTAssertEqual(r["status"], "success", "\(r)")

        // One byte more, and a much longer one, sent in pieces.
        let over = Wire.line(head + String(repeating: "p", count: pad + 1) + tail)
        try c.sendRaw(over)
        XCTAssertTrue(try c.expectError(.requestTooLarge).contains("\(ControlFraming.maxLineBytes + 1)"))
        let huge = [UInt8](repeating: UInt8(ascii: "["), count: 5 << 20)
        try c.sendRaw(Wire.prefix)
        for start in stride(from: 0, to: huge.count, by: 100_000) {
            try c.sendRaw(Array(huge[start..<min(start + 100_000, huge.count)]))
        }
        try c.sendRaw([0x0A] + Wire.line(#"{"command":"ping","commandId":"after"}"#))
        try c.expectError(.requestTooLarge)
        let after = try c.nextResponse()
        XCTAssertEqual(after["commandId"], "after")
        XCTAssertEqual(after["status"], "success")
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    // MARK: garbage

    func testBinaryGarbageNULsAndInvalidUTF8() throws {
        let c = try daemon.client()
        var rng = SeededRNG(seed: 0xBAD_1DEA)
        var lines = 0
        var batch: [UInt8] = []
        for i in 0..<500 {
            var bytes = (0..<Int.random(in: 1...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            bytes = bytes.map { $0 == 0x0A ? 0x00 : $0 }   // one line each
            switch i % 4 {
            case 0: bytes = Wire.prefix + bytes                                      // after a good prefix
            case 1: bytes = Wire.prefix + Array(#"{"command":""#.utf8) + bytes + Array(#""}"#.utf8)  // inside a string
            case 2: bytes[0] = 0x00                                                  // starting with NUL
            default: break
            }
            if bytes == [0x0D] { continue }
            batch += bytes + [0x0A]
            lines += 1
        }
        // Invalid UTF-8 in the command, the commandId and a param; NULs everywhere.
        for special in [Wire.prefix + Array(#"{"command":""#.utf8) + [0xFF, 0xFE, 0xC0, 0x80] + Array(#""}"#.utf8),
                        Wire.prefix + Array(#"{"command":"ping","commandId":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),
                        Wire.prefix + Array(#"{"command":"ping","params":{"x":""#.utf8) + [0xF8, 0x88, 0x80, 0x80, 0x80] + Array(#""}}"#.utf8),
                        [0x00, 0x00, 0x00], Wire.prefix + [0x00], Array("videodb_recorder|{\"command\":\"ping\"}".utf8) + [0x00]] {
            batch += special + [0x0A]
            lines += 1
        }
        try c.sendRaw(batch)
        for i in 0..<lines {
            let r = try c.nextResponse()
            XCTAssertEqual(r["status"], "error", "line \(i): \(r)")
        }
        XCTAssertNil(try c.nextLine(timeoutNs: 200_000_000), "one response per line, no more")
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    func testDeeplyNestedJSON() throws {
        let c = try daemon.client()
        let deep: [(String, [UInt8])] = [
            ("100000 [", Wire.prefix + [UInt8](repeating: UInt8(ascii: "["), count: 100_000) + [0x0A]),
            ("100000 [ and ]", Wire.prefix + [UInt8](repeating: UInt8(ascii: "["), count: 100_000)
                + [UInt8](repeating: UInt8(ascii: "]"), count: 100_000) + [0x0A]),
            ("50000 {\"a\":", Wire.prefix + Array(String(repeating: #"{"a":"#, count: 50_000).utf8) + [0x0A]),
            ("params nested 100000", Wire.line(#"{"command":"ping","params":{"x":"# + String(repeating: "[", count: 100_000)
                + String(repeating: "]", count: 100_000) + "}}")),
        ]
        for (what, line) in deep {
            try c.sendRaw(line)
            let r = try c.nextResponse()
            XCTAssertEqual(r["status"], "error", "\(what): \(r)")
            XCTAssertEqual(r["code"], "INVALID_REQUEST", "\(what): \(r)")
            XCTAssertTrue(daemon.process.isRunning, what)
        }
        // As deep as the parser takes (a few hundred levels): answered either way, never a crash.
        for depth in [64, 256, 400, 500, 511, 512, 513, 1024] {
            let nested = String(repeating: #"{"a":["#, count: depth / 2) + "1" + String(repeating: "]}", count: depth / 2)
            try c.sendRaw(Wire.line(#"{"command":"getStatus","commandId":"d\#(depth)","params":{"x":\#(nested)}}"#))
            let r = try c.nextResponse()
            XCTAssertTrue(r["commandId"] == .string("d\(depth)") || r["code"] == "INVALID_REQUEST", "depth \(depth): \(r)")
            XCTAssertTrue(daemon.process.isRunning, "depth \(depth)")
        }
        XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    // MARK: misbehaving clients

    func testClientDisconnectingMidLineDoesNotAffectOthers() throws {
        let a = try daemon.client()
        let b = try daemon.client()
        // Half a line each; the halves never mix between connections.
        try a.sendRaw(Array(#"videodb_recorder|{"command":"pi"#.utf8))
        try b.sendRaw(Array(#"videodb_recorder|{"command":"getSt"#.utf8))
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self).pong, true)
        try a.sendRaw(Array(#"ng","commandId":"a-1"}"#.utf8) + [0x0A])
        try b.sendRaw(Array(#"atus","commandId":"b-1"}"#.utf8) + [0x0A])
        let ra = try a.nextResponse()
        XCTAssertEqual(ra["commandId"], "a-1")
        XCTAssertEqual(ra["result"]?["pong"], true)
        let rb = try b.nextResponse()
        XCTAssertEqual(rb["commandId"], "b-1")
        XCTAssertEqual(rb["result"]?["state"], "idle")

        // Clients that go away in the middle of a line (and of a huge one).
        for i in 0..<20 {
            let gone = try daemon.client()
            try gone.sendRaw(Array(#"videodb_recorder|{"command":"ping","commandId":"gone-\#(i)"#.utf8))
            if i % 2 == 0 { try gone.sendRaw([UInt8](repeating: 0x41, count: 3 << 20)) }
        }   // each closed by deinit here
        try b.sendRaw(Wire.line(#"{"command":"ping","commandId":"b-2"}"#))
        XCTAssertEqual(try b.nextResponse()["commandId"], "b-2")
        try waitForClients(2, b)   // a and b
        XCTAssertEqual(try a.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    func testClientThatShutsDownItsSendingSideStillGetsEveryAnswer() throws {
        // As `printf ... | socat - UNIX-CONNECT:...` or `nc -N -U` talk: send, shut down writing, read.
        let s = try RawSocket(path: daemon.socketPath)
        var lines: [UInt8] = []
        for i in 0..<20 { lines += Wire.line(#"{"command":"ping","commandId":\#(i)}"#) }
        lines += Wire.line(#"{"command":"getChannels","commandId":"slow"}"#)   // answered from another queue
        lines += Wire.line(#"{"command":"nope"}"#) + Array("{bad\n".utf8)
        s.send(lines)
        s.shutdownWriting()
        let reply = try XCTUnwrap(s.readToEnd(within: 10), "the daemon closes once it has answered")
        let values = try reply.split(separator: 0x0A).map { try Wire.decode(Array($0)) }
        XCTAssertEqual(values.count, 23, "every request is answered: \(values)")
        XCTAssertTrue(values.contains { $0["commandId"] == "slow" && $0["status"] == "success" })
        for v in values { XCTAssertNil(Wire.responseProblem(v)) }

        // Nothing asked: closed at once.
        let quiet = try RawSocket(path: daemon.socketPath)
        quiet.shutdownWriting()
        XCTAssertEqual(quiet.readToEnd(within: 5), [])
        // Half a line, then the end: nothing to answer (an incomplete line is no request).
        let half = try RawSocket(path: daemon.socketPath)
        half.send(Array(#"videodb_recorder|{"command":"ping""#.utf8))
        half.shutdownWriting()
        XCTAssertEqual(half.readToEnd(within: 5), [])
        try waitForClients(1, try daemon.client())
    }

    func testClientThatNeverReadsIsDisconnectedAndMemoryStaysBounded() throws {
        let pid = daemon.process.processIdentifier
        let other = try daemon.client()
        XCTAssertEqual(try other.ok(.ping, as: DaemonInfo.self).pong, true)
        let rssBefore = try XCTUnwrap(ProcInfo.rssKiB(pid))

        let flooder = try daemon.client()
        let batch = Array(repeating: Wire.line(#"{"command":"ping"}"#), count: 1000).flatMap { $0 }
        var sent = 0
        var disconnected = false
        let started = Date()
        for _ in 0..<200 {   // up to 200k pings, never reading a reply
            do {
                try flooder.sendRaw(batch)
            } catch {
                disconnected = true
                break
            }
            sent += 1000
        }
        if !disconnected {
            // Everything fit in the socket buffers; the daemon must close it anyway once it has read it all.
            disconnected = (try? flooder.sendRaw(Wire.line(#"{"command":"ping"}"#))) == nil
            for _ in 0..<100 where !disconnected {
                usleep(50_000)
                disconnected = (try? flooder.sendRaw(Wire.line(#"{"command":"ping"}"#))) == nil
            }
        }
        print("flooder: \(sent) pings sent in \(String(format: "%.1f", Date().timeIntervalSince(started))) s; disconnected: \(disconnected)")
        XCTAssertTrue(disconnected, "a client with 8 MiB of unread replies must be disconnected")
        XCTAssertLessThan(sent, 200_000)

        let rssAfter = try XCTUnwrap(ProcInfo.rssKiB(pid))
        print("daemon RSS: \(rssBefore) KiB before, \(rssAfter) KiB after")
        XCTAssertLessThan(rssAfter - rssBefore, 64 << 10, "RSS grew by \(rssAfter - rssBefore) KiB")
        XCTAssertEqual(try other.ok(.ping, as: DaemonInfo.self).pong, true)
        try waitForClients(1, other)
        let deadline = Date().addingTimeInterval(5)
        while !daemon.log.contains("does not read its replies") && Date() < deadline { usleep(50_000) }
        XCTAssertTrue(daemon.log.contains("disconnecting a client") && daemon.log.contains("does not read its replies"),
                      "the disconnect is logged:\n\(daemon.log.suffix(2000))")
    }

    func testManyConnectionsOpenedAndClosedQuickly() throws {
        let pid = daemon.process.processIdentifier
        let keeper = try daemon.client()
        try waitForClients(1, keeper)
        let fdsBefore = ProcInfo.openDescriptors(pid)
        for i in 0..<500 {
            let c = try daemon.client()
            switch i % 4 {
            case 0: break                                                             // connect, close
            case 1: try c.sendRaw(Wire.line(#"{"command":"ping"}"#))                  // ask, don't wait
            case 2: try c.sendRaw(Array(#"videodb_recorder|{"comm"#.utf8))             // half a line
            default: XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true)                   // a full round trip
            }
        }
        try waitForClients(1, keeper)
        // Descriptors are released once both dispatch sources are cancelled.
        var fdsAfter = ProcInfo.openDescriptors(pid)
        let deadline = Date().addingTimeInterval(5)
        while fdsAfter > fdsBefore + 2 && Date() < deadline { usleep(50_000); fdsAfter = ProcInfo.openDescriptors(pid) }
        XCTAssertLessThanOrEqual(fdsAfter, fdsBefore + 2, "descriptors leak: \(fdsBefore) before, \(fdsAfter) after")
        XCTAssertEqual(try keeper.ok(.ping, as: DaemonInfo.self).pong, true)
    }

    func testMoreThan64ClientsTheExtraOneIsToldAndClosed() throws {
        let first = try daemon.client()
        try waitForClients(1, first)
        var clients = [first]
        for _ in 1..<64 {
            let c = try daemon.client()
            XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self, timeout: .seconds(10)).pong, true)
            clients.append(c)
        }
        try waitForClients(64, first)

        let extra = try daemon.client()
        let line = try XCTUnwrap(try extra.nextLine(timeoutNs: 5_000_000_000), "the 65th client gets an error line")
        let value = try Wire.decode(line)
        XCTAssertNil(Wire.responseProblem(value), "\(value)")
        XCTAssertEqual(value["status"], "error")
        XCTAssertEqual(value["code"], "INVALID_STATE")
        XCTAssertTrue(value["result"]?.stringValue?.contains("too many clients") == true, "\(value)")
        XCTAssertNil(try extra.nextLine(timeoutNs: 5_000_000_000))
        XCTAssertTrue(extra.isClosed, "and is closed")
        XCTAssertTrue(daemon.log.contains("too many clients"))

        // The 64 still work; once one leaves, a newcomer is served.
        for c in clients.suffix(3) { XCTAssertEqual(try c.ok(.ping, as: DaemonInfo.self).pong, true) }
        clients.removeLast()
        try waitForClients(63, first)
        XCTAssertEqual(try daemon.client().ok(.ping, as: DaemonInfo.self).pong, true)
        clients.removeAll()
    }
}
