import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Makes request lines: valid ones for every command (but `shutdown`), then
/// mutated at the byte level and at the JSON level, and pure noise.
struct RequestFuzzer {
    var rng: SeededRNG
    private var serial = 0

    init(seed: UInt64) { rng = SeededRNG(seed: seed) }

    /// Plausible params (JSON object text) per command; `shutdown` is left out on purpose.
    static let corpus: [(command: String, params: [String], weight: Int)] = [
        // Endpoints on loopback only (a session with one uploads to it): port 9 refuses at once.
        ("init", [#"{"apiUrl":"https://127.0.0.1:9"}"#, "{}", #"{"apiUrl":"http://localhost:9/v1"}"#], 8),
        ("requestPermission", [#"{"permission":"microphone"}"#, #"{"permission":"screen-capture"}"#,
                               #"{"permission":"system-audio"}"#, #"{"permission":"screen"}"#], 1),
        ("getChannels", ["{}"], 1),
        ("startRecording", [
            #"{"sessionId":"fz-1","channels":[{"channel_id":"display:1","type":"video","name":"Display 1","store":true,"is_primary":true}]}"#,
            #"{"sessionId":"fz-2","uploadToken":"eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjE5MDAwMDAwMDB9.c2ln","tokenExpiresAt":1900000000,"endpoint":"wss://127.0.0.1:9/v1","channels":[{"channel_id":"mic:default","type":"audio","name":"Mic","store":true},{"channel_id":"system_audio:default","type":"audio","name":"Speakers","store":false},{"channel_id":"display:1","type":"video","name":"Display","is_primary":true}]}"#,
            #"{"channels":[]}"#,
        ], 12),
        ("stopRecording", [#"{"sessionId":"fz-1"}"#, "{}"], 8),
        ("pauseTracks", [#"{"tracks":["mic","system_audio","screen"]}"#, #"{"tracks":["mic"]}"#, "{}"], 8),
        ("resumeTracks", [#"{"tracks":["screen"]}"#, "{}"], 8),
        ("getStatus", ["{}"], 8),
        ("updateToken", [#"{"token":"abc.def.ghi","expiresAt":1900000000}"#, #"{"token":"t0k3n"}"#], 8),
        ("subscribeEvents", [#"{"events":["recording-started","recording-stopped"]}"#, "{}"], 6),
        ("unsubscribeEvents", [#"{"events":["channel-error"]}"#, "{}"], 6),
        ("ping", ["{}"], 8),
    ]
    static let totalWeight = corpus.reduce(0) { $0 + $1.weight }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &rng) }
    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0...(items.count - 1))] }

    /// A valid request line (without the newline) for a corpus entry.
    mutating func validLine() -> String {
        var w = int(0...(Self.totalWeight - 1))
        var entry = Self.corpus[0]
        for e in Self.corpus {
            if w < e.weight { entry = e; break }
            w -= e.weight
        }
        serial += 1
        let id = chance(0.2) ? "\(serial)" : "\"fz-\(serial)\""
        let params = pick(entry.params)
        switch int(0...3) {
        case 0: return ControlFraming.prefix + #"{"command":"\#(entry.command)","commandId":\#(id),"params":\#(params)}"#
        case 1: return ControlFraming.prefix + #"{"params":\#(params),"commandId":\#(id),"command":"\#(entry.command)"}"#
        case 2: return ControlFraming.prefix + #"{"commandId":\#(id),"command":"\#(entry.command)"}"#
        default: return ControlFraming.prefix + #"{ "command" : "\#(entry.command)" , "params" : \#(params) , "commandId" : \#(id) }"#
        }
    }

    mutating func scalar() -> Unicode.Scalar {
        let ranges: [ClosedRange<UInt32>] = [0x20...0x7E, 0x01...0x1F, 0xA0...0x2FF, 0x300...0x36F, 0x400...0x4FF, 0x590...0x6FF,
                                             0x200B...0x202E, 0x4E00...0x9FFF, 0xFFF0...0xFFFD, 0x1F300...0x1FAFF, 0x10000...0x10FFFF]
        while true {
            if let s = Unicode.Scalar(UInt32.random(in: pick(ranges), using: &rng)) { return s }
        }
    }

    mutating func unicodeText(_ maxCount: Int) -> String {
        var s = String.UnicodeScalarView()
        for _ in 0..<int(0...maxCount) { s.append(scalar()) }
        return String(s)
    }

    /// JSON string literal text, sometimes with tricky escapes.
    mutating func stringLiteral() -> String {
        switch int(0...5) {
        case 0: return "\"\""
        case 1: return "\"" + pick([#"\u0000"#, #"\ud800"#, #"\udfff\ud800"#, #"\ud83d\ude00"#, #"\uFFFF"#, #"\n\r\t\b\f\/\\\""#,
                                    #"\x41"#, #"\u12"#, #"\"#]) + "\""
        case 2: return "\"" + String(repeating: pick(["a", "é", "🎥", "%s%n", "{", "\\\\"]), count: int(1...2000)) + "\""
        default:
            let raw = unicodeText(24)
            // Mostly escaped properly, sometimes raw (control characters make it invalid).
            if chance(0.7), let data = try? JSONCoding.encoder.encode(raw) { return String(decoding: data, as: UTF8.self) }
            return "\"" + raw + "\""
        }
    }

    mutating func hugeNumber() -> String {
        pick(["1e400", "-1e400", "1e-400", "99999999999999999999999999999", "-9223372036854775809", "9223372036854775807",
              "-9223372036854775808", "18446744073709551616", "0.000000000000000000001", "-0", "-0.0", "1E+2", "1.5e308",
              "4.9e-324", String(repeating: "9", count: int(20...4000)), "0" + String(int(0...99)), "+1", ".5", "5.", "0x10",
              "NaN", "Infinity", "-Infinity"])
    }

    /// Random JSON text (occasionally invalid), nested up to `depth`.
    mutating func randomJSON(depth: Int = 3) -> String {
        switch int(0...(depth > 0 ? 9 : 6)) {
        case 0: return "null"
        case 1: return chance(0.5) ? "true" : "false"
        case 2: return String(Int64.random(in: Int64.min...Int64.max, using: &rng))
        case 3: return hugeNumber()
        case 4, 5: return stringLiteral()
        case 6: return String(Double.random(in: -1e6...1e6, using: &rng))
        case 7:
            return "[" + (0..<int(0...4)).map { _ in randomJSON(depth: depth - 1) }.joined(separator: ",") + "]"
        default:
            return "{" + (0..<int(0...4)).map { _ in stringLiteral() + ":" + randomJSON(depth: depth - 1) }.joined(separator: ",") + "}"
        }
    }

    /// Replaces one JSON value after a random `"key":` with a random value.
    mutating func replaceAValue(_ line: String) -> String {
        var bytes = Array(line.utf8)
        let colons = bytes.indices.filter { bytes[$0] == UInt8(ascii: ":") && $0 > 0 && bytes[$0 - 1] == UInt8(ascii: "\"") }
        guard !colons.isEmpty else { return line }
        let at = pick(colons) + 1
        // The old value ends at the next ',' or '}' at this level (roughly: good enough to make wrong types).
        var end = at
        var depth = 0
        var inString = false
        while end < bytes.count {
            let b = bytes[end]
            if inString {
                if b == UInt8(ascii: "\\") { end += 1 } else if b == UInt8(ascii: "\"") { inString = false }
            } else if b == UInt8(ascii: "\"") { inString = true }
            else if b == UInt8(ascii: "[") || b == UInt8(ascii: "{") { depth += 1 }
            else if b == UInt8(ascii: "]") || b == UInt8(ascii: "}") { if depth == 0 { break }; depth -= 1 }
            else if b == UInt8(ascii: ","), depth == 0 { break }
            end += 1
        }
        bytes.replaceSubrange(at..<min(end, bytes.count), with: Array(randomJSON().utf8))
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Adds a duplicate key right after the opening brace of the request (or of params).
    mutating func duplicateKey(_ line: String) -> String {
        let commands = Self.corpus.map(\.command) + ["shutdown", "nope", ""]
        let dup = pick([
            #""command":"\#(pick(commands))","#, #""commandId":\#(randomJSON(depth: 1)),"#, #""params":\#(randomJSON(depth: 2)),"#,
            #""command":\#(randomJSON(depth: 1)),"#, #""tracks":["mic"],"tracks":5,"#, #""sessionId":"a","sessionId":"b","#,
        ])
        var bytes = Array(line.utf8)
        let braces = bytes.indices.filter { bytes[$0] == UInt8(ascii: "{") }
        guard !braces.isEmpty else { return line }
        let at = chance(0.5) ? braces[0] : pick(braces)
        bytes.insert(contentsOf: Array(dup.utf8), at: at + 1)
        return String(decoding: bytes, as: UTF8.self)
    }

    mutating func byteMutations(_ input: [UInt8]) -> [UInt8] {
        var b = input
        for _ in 0..<int(1...8) {
            if b.isEmpty { b = [UInt8(ascii: "{")] }
            let i = int(0...(b.count - 1))
            switch int(0...8) {
            case 0: b[i] ^= UInt8(1) << UInt8(int(0...7))                                  // bit flip
            case 1: b[i] = UInt8.random(in: 0...255, using: &rng)                           // random byte
            case 2: b.removeSubrange(i..<min(b.count, i + int(1...16)))                     // delete
            case 3: b.insert(contentsOf: (0..<int(1...8)).map { _ in UInt8.random(in: 0...255, using: &rng) }, at: i)
            case 4: b.insert(pick(Array("\"{}[],:\\".utf8)), at: i)                          // structure characters
            case 5: b = Array(b[0..<i])                                                     // truncate
            case 6: let j = min(b.count, i + int(1...32)); b.insert(contentsOf: b[i..<j], at: j)   // duplicate a range
            case 7: b.insert(contentsOf: Array(String(scalar()).utf8), at: i)               // unicode (maybe mid-sequence)
            default: b.insert(contentsOf: Array(hugeNumber().utf8), at: i)
            }
        }
        return b
    }

    mutating func swappedPrefix(_ line: String) -> [UInt8] {
        let body = Array(line.utf8.dropFirst(ControlFraming.prefixBytes.count))
        let prefix = pick(["", "videodb_recorder", "videodb_recorder||", "VIDEODB_RECORDER|", "videodb_recorder:", " videodb_recorder|",
                           "videodb_recorde|", "videodb_recorder|videodb_recorder|", "\u{FEFF}videodb_recorder|", "recorder|",
                           "videodb_recorder|\u{0}"])
        return Array(prefix.utf8) + body
    }

    /// One line, without its newline (it never contains 0x0A).
    mutating func nextLine() -> [UInt8] {
        let valid = validLine()
        var out: [UInt8]
        switch int(0...99) {
        case 0..<10: out = Array(valid.utf8)
        case 10..<25: out = Array(replaceAValue(valid).utf8)
        case 25..<35: out = Array(duplicateKey(valid).utf8)
        case 35..<70: out = byteMutations(Array(valid.utf8))
        case 70..<75:
            var s = Array(valid.utf8)
            s.insert(contentsOf: Array(unicodeText(40).utf8), at: int(0...s.count))
            out = s
        case 75..<80: out = swappedPrefix(valid)
        case 80..<90: out = (0..<int(0...400)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        case 90..<94: out = Array((ControlFraming.prefix + randomJSON(depth: 4)).utf8)
        default:
            let command = chance(0.5) ? pick(Self.corpus.map(\.command)) : unicodeText(12)
            out = Array((ControlFraming.prefix + #"{"command":\#((try? String(decoding: JSONCoding.encoder.encode(command), as: UTF8.self)) ?? "\"x\""),"commandId":\#(randomJSON(depth: 1)),"params":\#(randomJSON(depth: 3))}"#).utf8)
        }
        return out.map { $0 == 0x0A ? 0x20 : $0 }
    }
}

/// Random and mutated messages (10,000 at each of three fixed seeds in CI) over the socket
/// of a daemon that has the test rig (so sessions could really start); a valid
/// `startRecording` and any `shutdown` are never sent. Every non-empty line must get exactly
/// one well-formed response, with the commandId the documented rules give (an oracle of its
/// own: Python's JSON parser and docs/control-protocol.md, not the daemon's parser);
/// afterwards a real session must still work.
final class FuzzTests: XCTestCase {
    /// getChannels and requestPermission open and close X connections; several
    /// at once used to corrupt the heap (libXext's per-display bookkeeping).
    func testConcurrentDeviceQueriesDoNotCrashTheDaemon() throws {
        let daemon = try DaemonProcess(rig: try TestRig.shared(), name: "concurrent-devices")
        let clients = try (0..<4).map { _ in try daemon.client() }
        let perClient = 150
        for (n, c) in clients.enumerated() {
            var batch: [UInt8] = []
            for i in 0..<perClient {
                batch += i % 2 == 0 ? Wire.line(#"{"command":"getChannels","commandId":"\#(n)-\#(i)"}"#)
                    : Wire.line(#"{"command":"requestPermission","commandId":"\#(n)-\#(i)","params":{"permission":"screen-capture"}}"#)
            }
            try c.sendRaw(batch)
        }
        let started = Date()
        for c in clients {
            for _ in 0..<perClient {
                let r = try c.nextResponse(within: 60)
                XCTAssertEqual(r["status"], "success", "\(r)")
                guard daemon.process.isRunning else {
                    XCTFail("the daemon died: \(daemon.log.suffix(3000))")
                    return
                }
            }
        }
        print("concurrent device queries: \(clients.count * perClient) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        let channels = try daemon.client().ok(.getChannels, as: ChannelsResult.self).channels
        XCTAssertTrue(channels.contains { $0.channelId == "display:1" }, "\(channels)")
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// Device queries while sessions start and stop: both open and close X
    /// connections, on different queues. This crashed the daemon (heap
    /// corruption in libXext's per-display bookkeeping) until X11Connection
    /// opened and closed displays under one process-wide lock.
    func testDeviceQueriesWhileSessionsStartAndStop() throws {
        let daemon = try DaemonProcess(rig: try TestRig.shared(), name: "x11-race")
        let spammer = try daemon.client()
        let recorder = try daemon.client()
        let queries = Wire.line(#"{"command":"getChannels"}"#) + Wire.line(#"{"command":"requestPermission","params":{"permission":"screen"}}"#)
        var answered = 0
        for i in 0..<15 {
            try recorder.send(ControlRequest(command: "startRecording", commandId: .string("start-\(i)"), params: [
                "sessionId": .string("race-\(i)"), "channels": .array([.object(["channel_id": "display:1"])])]))
            for _ in 0..<10 { try spammer.sendRaw(queries) }
            for _ in 0..<20 {
                _ = try spammer.nextResponse(within: 30)
                answered += 1
            }
            XCTAssertEqual(try recorder.nextResponse(within: 30)["status"], "success")
            try recorder.send(ControlRequest(command: "stopRecording", commandId: .string("stop-\(i)")))
            for _ in 0..<10 { try spammer.sendRaw(queries) }
            for _ in 0..<20 {
                _ = try spammer.nextResponse(within: 30)
                answered += 1
            }
            XCTAssertEqual(try recorder.nextResponse(within: 30)["status"], "success")
            guard daemon.process.isRunning else { return XCTFail("the daemon died: \(daemon.log.suffix(3000))") }
        }
        XCTAssertEqual(answered, 600)
        XCTAssertEqual(daemon.terminate(), 0)
    }

    /// The seeds CI runs (the same lines every run: a failure reproduces). A long run with a
    /// random seed: `CAPTURE_FUZZ_SEED=random CAPTURE_FUZZ_COUNT=100000 swift test --filter FuzzTests`.
    static let ciSeeds: [UInt64] = [0x5EED_0001, 0xC0FF_EE42, 0x0BAD_F00D_D15E_A5E5]

    func testFuzzedRequestsNeverBreakTheDaemon() throws {
        let environment = ProcessInfo.processInfo.environment
        let seeds: [UInt64] = switch environment["CAPTURE_FUZZ_SEED"] {
        case nil: Self.ciSeeds
        case "random": [UInt64.random(in: 1...UInt64.max)]
        case let text?: [UInt64(text) ?? Self.ciSeeds[0]]
        }
        let total = environment["CAPTURE_FUZZ_COUNT"].flatMap { Int($0) } ?? 10_000 * seeds.count
        for (k, seed) in seeds.enumerated() {
            try fuzz(seed: seed, lines: total / seeds.count + (k < total % seeds.count ? 1 : 0))
        }
    }

    /// What the oracle (Tests/EndpointScripts/control_line_oracle.py: the documented rules,
    /// Python's JSON parser) says each line gets.
    struct Expectation: Decodable {
        var reply: Bool
        var id: JSONValue?
        var skip: String?
    }

    static func oracle(_ lines: [[UInt8]]) throws -> [Expectation] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-oracle-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var input: [UInt8] = []
        for line in lines { input += line; input.append(0x0A) }
        FileManager.default.createFile(atPath: dir + "/lines", contents: Data(input))
        let script = Repo.root + "/Tests/EndpointScripts/control_line_oracle.py"
        let r = try runProcess("/bin/sh", ["-c", "exec python3 \"$0\" < \"$1\"", script, dir + "/lines"], timeout: .seconds(120))
        guard r.status == 0 else { throw CaptureError(.internalError, "the oracle failed: \(r.stderr)") }
        let out = try r.stdout.split(separator: "\n").map { try JSONCoding.decoder.decode(Expectation.self, from: Data($0.utf8)) }
        guard out.count == lines.count else { throw CaptureError(.internalError, "the oracle answered \(out.count) of \(lines.count) lines") }
        return out
    }

    private func fuzz(seed: UInt64, lines total: Int) throws {
        print("FuzzTests seed: \(seed) (rerun with CAPTURE_FUZZ_SEED=\(seed)); messages: \(total)")
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "fuzz")
        let pid = daemon.process.processIdentifier
        let started = Date()
        var fuzzer = RequestFuzzer(seed: seed)
        // Every line up front, so that the oracle runs once.
        let generated = (0..<(total + total / 10 + 100)).map { _ in fuzzer.nextLine() }
        let expectations = try Self.oracle(generated)
        var nextGenerated = 0
        var disagreements: [String] = []
        let client = try daemon.client()
        let rssBefore = ProcInfo.rssKiB(pid) ?? 0

        var sentLines = 0
        var expectedResponses = 0
        var skipped = 0
        var events = 0
        var statuses: [String: Int] = [:]
        var codes: [String: Int] = [:]
        let batchSize = 200

        while sentLines < total {
            var batch: [UInt8] = []
            var pending: [JSONValue: Int] = [:]   // commandIds still to be answered
            var pendingCount = 0
            var batchLines: [[UInt8]] = []
            while batchLines.count < batchSize && sentLines + batchLines.count < total {
                guard nextGenerated < generated.count else { break }
                let line = generated[nextGenerated]
                let expectation = expectations[nextGenerated]
                nextGenerated += 1
                var body = line
                if body.last == 0x0D { body.removeLast() }
                // Which lines to leave out is the daemon's own parameter check (no session may
                // start); what each line sent must get is the oracle's alone.
                if expectation.skip == "always" {
                    skipped += 1
                    continue
                }
                if expectation.skip == "if-valid", case .success(let r) = ControlRequest.parse(line: body),
                   (try? StartRecordingParams(r)) != nil {
                    skipped += 1
                    continue
                }
                let expectedId: JSONValue? = expectation.reply ? (expectation.id ?? .null) : nil
                // The daemon's parser beside the oracle: where they differ, the line is shown.
                let parsedId: JSONValue? = body.isEmpty ? nil : {
                    switch ControlRequest.parse(line: body) {
                    case .success(let r): r.commandId
                    case .failure(let e): e.commandId
                    }
                }()
                if parsedId != expectedId, disagreements.count < 10 {
                    disagreements.append("\(String(decoding: line, as: UTF8.self).debugDescription): documented \(expectedId.map { "\($0)" } ?? "no reply"), parsed \(parsedId.map { "\($0)" } ?? "no reply")")
                }
                if let expectedId {
                    pending[expectedId, default: 0] += 1
                    pendingCount += 1
                }
                batch += line
                batch.append(0x0A)
                batchLines.append(line)
            }
            if batchLines.isEmpty { break }   // every generated line used (only if most were left out)
            try client.sendRaw(batch)
            sentLines += batchLines.count
            expectedResponses += pendingCount

            let deadline = Date().addingTimeInterval(30)
            while pendingCount > 0 {
                guard let raw = try client.nextLine(timeoutNs: Int64(max(0, deadline.timeIntervalSinceNow) * 1e9)) else {
                    let alive = daemon.process.isRunning
                    XCTFail("""
                        seed \(seed): \(pendingCount) responses missing after line \(sentLines) (daemon running: \(alive), \
                        connection closed: \(client.isClosed)); batch:
                        \(batchLines.map { String(decoding: $0, as: UTF8.self).debugDescription }.joined(separator: "\n"))
                        log: \(daemon.log.suffix(3000))
                        """)
                    return
                }
                let value: JSONValue
                do {
                    value = try Wire.decode(raw)
                } catch {
                    XCTFail("seed \(seed): \(error)")
                    return
                }
                if value["type"] == "event" {
                    events += 1
                    if let problem = Wire.eventProblem(value) { XCTFail("seed \(seed): \(problem)"); return }
                    continue
                }
                if let problem = Wire.responseProblem(value) { XCTFail("seed \(seed): \(problem)"); return }
                let id = value["commandId"] ?? .null
                guard let n = pending[id], n > 0 else {
                    XCTFail("seed \(seed): a response for commandId \(id) that was not expected (or one too many): \(value); "
                        + "lines where the daemon's parser and the documented rules differ: \(disagreements)")
                    return
                }
                pending[id] = n == 1 ? nil : n - 1
                pendingCount -= 1
                statuses[value["status"]?.stringValue ?? "?", default: 0] += 1
                if let code = value["code"]?.stringValue { codes[code, default: 0] += 1 }
            }
            guard daemon.process.isRunning else {
                XCTFail("seed \(seed): the daemon died after line \(sentLines); log: \(daemon.log.suffix(3000))")
                return
            }
        }
        XCTAssertEqual(disagreements, [], "seed \(seed): lines where the daemon's parser and the documented rules differ")
        // Nothing more than one response per line.
        while let raw = try client.nextLine(timeoutNs: 300_000_000) {
            let value = try Wire.decode(raw)
            XCTAssertEqual(value["type"], "event", "seed \(seed): an extra response: \(value)")
        }
        let fuzzSeconds = Date().timeIntervalSince(started)
        let rssAfter = ProcInfo.rssKiB(pid) ?? 0
        print("""
            FuzzTests: \(sentLines) lines (\(skipped) valid start/shutdown lines left out), \(expectedResponses) responses, \
            \(events) events in \(String(format: "%.1f", fuzzSeconds)) s; statuses \(statuses); codes \(codes); \
            RSS \(rssBefore) -> \(rssAfter) KiB; threads \(ProcInfo.threads(pid)); descriptors \(ProcInfo.openDescriptors(pid))
            """)
        XCTAssertGreaterThanOrEqual(sentLines, total)
        XCTAssertGreaterThan(statuses["success"] ?? 0, total / 50, "the corpus keeps some requests valid")
        XCTAssertGreaterThan(statuses["error"] ?? 0, total / 2)
        XCTAssertLessThan(rssAfter - rssBefore, 128 << 10, "RSS grew by \(rssAfter - rssBefore) KiB during the fuzz")

        // The daemon is intact: same connection, a fresh one, state idle, counters moved.
        XCTAssertTrue(daemon.process.isRunning)
        XCTAssertEqual(try client.ok(.ping, as: DaemonInfo.self).pong, true)
        let fresh = try daemon.client()
        let status = try fresh.ok("getStatus")
        XCTAssertEqual(status["state"], "idle", "no session was ever started: \(status)")
        XCTAssertGreaterThanOrEqual(status["daemon"]?["requests"]?.int64Value ?? 0, Int64(expectedResponses - (codes["REQUEST_TOO_LARGE"] ?? 0)))

        // And a real session still records. (Its endpoint, from the last init, is put back
        // on loopback first: a mutated apiUrl can still be a URL, with any host in it.)
        _ = try fresh.ok("init", ["apiUrl": "http://127.0.0.1:9"])
        let sessionId = "after-fuzz-\(seed % 100_000)"
        let start = try fresh.ok("startRecording", ["sessionId": .string(sessionId),
                                                    "channels": .array([.object(["channel_id": "display:1", "is_primary": true])])])
        XCTAssertEqual(start["state"], "active", "\(start)")
        usleep(2_200_000)
        let stop = try fresh.ok("stopRecording", ["sessionId": .string(sessionId)])
        let channels = try XCTUnwrap(stop["summary"]?["channels"]?.arrayValue, "\(stop)")
        XCTAssertEqual(channels.count, 1)
        let chunks = channels.first?["chunks"]?.int64Value ?? 0
        XCTAssertGreaterThan(chunks, 0, "\(stop)")
        let dir = daemon.sessionDirectory(sessionId) + "/display-1"
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        XCTAssertEqual(files.filter { $0.hasSuffix(".ts") }.count, Int(chunks), "chunk files in \(dir): \(files)")
        for file in files where file.hasSuffix(".ts") {
            let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/" + file)[.size] as? Int) ?? 0
            XCTAssertGreaterThan(size, 1000, file)
        }
        XCTAssertEqual(try fresh.ok("getStatus")["state"], "stopped")
        XCTAssertEqual(daemon.terminate(), 0)
        print("FuzzTests: total \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }
}
