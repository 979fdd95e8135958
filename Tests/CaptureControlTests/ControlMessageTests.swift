import CaptureControl
import CaptureCore
import Foundation
import XCTest

final class ControlRequestParseTests: XCTestCase {
    private func line(_ json: String) -> [UInt8] { Array(("videodb_recorder|" + json).utf8) }

    private func parseError(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> ControlRequestError? {
        switch ControlRequest.parse(line: bytes) {
        case .success(let r):
            XCTFail("parsed but should not have: \(r)", file: file, line: line)
            return nil
        case .failure(let e):
            return e
        }
    }

    private func parse(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> ControlRequest {
        switch ControlRequest.parse(line: bytes) {
        case .success(let r): return r
        case .failure(let e):
            XCTFail("did not parse: \(e.error)", file: file, line: line)
            throw e.error
        }
    }

    func testValidRequest() throws {
        let r = try parse(line(#"{"command":"startRecording","commandId":"c-1","params":{"sessionId":"s","n":3}}"#))
        XCTAssertEqual(r.command, "startRecording")
        XCTAssertEqual(r.commandId, .string("c-1"))
        XCTAssertEqual(r.params, ["sessionId": .string("s"), "n": .integer(3)])
        let bare = try parse(line(#"{"command":"ping"}"#))
        XCTAssertEqual(bare.commandId, .null)
        XCTAssertEqual(bare.params, [:])
        XCTAssertEqual(try parse(line(#"{"command":"ping","params":null,"commandId":null}"#)).params, [:])
        // Whitespace inside the JSON is fine.
        XCTAssertEqual(try parse(line(" {\n\"command\" : \"ping\" } ")).command, "ping")
    }

    func testMissingOrWrongPrefix() throws {
        for bad in [#"{"command":"ping"}"#, #"videodb_recorder:{"command":"ping"}"#, #"VIDEODB_RECORDER|{"command":"ping"}"#,
                    "videodb_recorder", "videodb_recorde", "", #" videodb_recorder|{"command":"ping"}"#] {
            let e = try XCTUnwrap(parseError(Array(bad.utf8)), bad)
            XCTAssertEqual(e.error.code, .invalidRequest, bad)
            XCTAssertEqual(e.commandId, .null)
            XCTAssertTrue(e.error.message.contains("videodb_recorder|"), e.error.message)
        }
    }

    func testNotJSONOrNotAnObject() throws {
        for bad in ["", "{", #"{"command":"ping""#, "{command:ping}", "not json", #"{"command":"ping"}}"#, "\u{0}", "nul\u{0}l"] {
            let e = try XCTUnwrap(parseError(line(bad)), bad)
            XCTAssertEqual(e.error.code, .invalidRequest, bad)
            XCTAssertEqual(e.commandId, .null)
        }
        XCTAssertTrue(try XCTUnwrap(parseError(line("{oops"))).error.message.contains("not valid JSON"))
        for (bad, type) in [("[1,2]", "array"), ("\"ping\"", "string"), ("42", "number"), ("null", "null"), ("true", "boolean")] {
            let e = try XCTUnwrap(parseError(line(bad)), bad)
            XCTAssertEqual(e.error.code, .invalidRequest)
            XCTAssertTrue(e.error.message.contains("JSON object") && e.error.message.contains(type), e.error.message)
        }
        // Invalid UTF-8 inside a string.
        let invalid = line(#"{"command":"p"#) + [0xFF, 0xFE] + Array(#"ing"}"#.utf8)
        XCTAssertEqual(try XCTUnwrap(parseError(invalid)).error.code, .invalidRequest)
    }

    func testMissingCommandKeepsTheCommandId() throws {
        for (json, id) in [(#"{"commandId":"x-1"}"#, JSONValue.string("x-1")), (#"{"commandId":7,"command":""}"#, .integer(7)),
                           (#"{"commandId":"x","command":5}"#, .string("x")), (#"{"commandId":"x","command":null}"#, .string("x")),
                           (#"{"commandId":"x","command":["ping"]}"#, .string("x")), ("{}", .null)] {
            let e = try XCTUnwrap(parseError(line(json)), json)
            XCTAssertEqual(e.error.code, .invalidRequest, json)
            XCTAssertEqual(e.commandId, id, json)
            XCTAssertTrue(e.error.message.contains("command"), e.error.message)
        }
    }

    func testWrongTypedCommandIdOrParams() throws {
        for json in [#"{"command":"ping","commandId":true}"#, #"{"command":"ping","commandId":1.5}"#,
                     #"{"command":"ping","commandId":{"a":1}}"#, #"{"command":"ping","commandId":[1]}"#,
                     #"{"command":"ping","commandId":1e300}"#,
                     "{\"command\":\"ping\",\"commandId\":\"\(String(repeating: "x", count: 257))\"}"] {
            let e = try XCTUnwrap(parseError(line(json)), json)
            XCTAssertEqual(e.error.code, .invalidRequest, json)
            XCTAssertEqual(e.commandId, .null, json)
            XCTAssertTrue(e.error.message.contains("commandId"), e.error.message)
        }
        // 256 bytes is still fine.
        let longest = String(repeating: "é", count: 128)
        XCTAssertEqual(try parse(line("{\"command\":\"ping\",\"commandId\":\"\(longest)\"}")).commandId, .string(longest))

        for (json, type) in [(#"{"command":"ping","commandId":"p","params":[]}"#, "array"),
                             (#"{"command":"ping","commandId":"p","params":"x"}"#, "string"),
                             (#"{"command":"ping","commandId":"p","params":5}"#, "number"),
                             (#"{"command":"ping","commandId":"p","params":false}"#, "boolean")] {
            let e = try XCTUnwrap(parseError(line(json)), json)
            XCTAssertEqual(e.error.code, .invalidRequest)
            XCTAssertEqual(e.commandId, .string("p"), "the reply can still be matched")
            XCTAssertTrue(e.error.message.contains("params") && e.error.message.contains(type), e.error.message)
        }
    }

    func testIntegerCommandIdIsEchoedAsAnInteger() throws {
        let r = try parse(line(#"{"command":"ping","commandId":42}"#))
        XCTAssertEqual(r.commandId, .integer(42))
        let big = try parse(line(#"{"command":"ping","commandId":-9223372036854775808}"#))
        XCTAssertEqual(big.commandId, .integer(Int64.min))
        let response = ControlResponse.success(commandId: r.commandId, result: .object([:])).encodedLine()
        let text = String(decoding: response, as: UTF8.self)
        XCTAssertTrue(text.contains(#""commandId":42,"#), text)
        let error = ControlResponse.failure(commandId: .integer(42), error: CaptureError(.invalidState, "no")).encodedLine()
        XCTAssertTrue(String(decoding: error, as: UTF8.self).contains(#""commandId":42,"#))
    }

    func testUnicode() throws {
        let r = try parse(line(#"{"command":"ping","commandId":"ид-🎥-\u00e9","params":{"name":"日本語 \ud83d\ude00","emoji🎬":"\u0000"}}"#))
        XCTAssertEqual(r.commandId, .string("ид-🎥-é"))
        XCTAssertEqual(r.params["name"], .string("日本語 😀"))
        XCTAssertEqual(r.params["emoji🎬"], .string("\u{0}"))
        // Unicode commands parse (and are unknown to the service, not a parse error).
        XCTAssertEqual(try parse(line(#"{"command":"пинг"}"#)).command, "пинг")
        // Round trip through encodedLine.
        let again = try parse(Array(r.encodedLine().dropLast()))
        XCTAssertEqual(again, r)
    }

    func testEncodedLineRoundTrips() throws {
        let request = ControlRequest(command: "pauseTracks", commandId: .string("abc"),
                                     params: ["tracks": .array(["mic", "screen"]), "x": .number(0.25), "b": true, "n": .null])
        let bytes = request.encodedLine()
        XCTAssertEqual(bytes.last, 0x0A)
        XCTAssertEqual(bytes.filter { $0 == 0x0A }.count, 1)
        XCTAssertTrue(bytes.starts(with: ControlFraming.prefixBytes))
        XCTAssertEqual(try parse(Array(bytes.dropLast())), request)
        // A newline inside a string is escaped, never framed.
        let multiline = ControlRequest(command: "ping", commandId: "a\nb", params: ["s": "x\r\ny"])
        let encoded = multiline.encodedLine()
        XCTAssertEqual(encoded.filter { $0 == 0x0A }.count, 1)
        XCTAssertEqual(try parse(Array(encoded.dropLast())), multiline)
    }
}

final class ControlEncodingTests: XCTestCase {
    private func decodeLine(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        XCTAssertEqual(bytes.last, 0x0A, file: file, line: line)
        XCTAssertEqual(bytes.filter { $0 == 0x0A }.count, 1, "one line", file: file, line: line)
        XCTAssertTrue(bytes.starts(with: ControlFraming.prefixBytes), file: file, line: line)
        let json = Data(bytes[ControlFraming.prefixBytes.count..<(bytes.count - 1)])
        // Plain JSONSerialization must accept it too (what any SDK uses).
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: json), file: file, line: line)
        return try JSONCoding.decoder.decode(JSONValue.self, from: json)
    }

    func testSuccessResponse() throws {
        let result: JSONValue = .object(["a": .array([.integer(1), .number(2.5), .null, .bool(false), .string("ü\n\"")]),
                                         "nested": .object(["deep": .object([:])])])
        let response = ControlResponse.success(commandId: "id-1", result: result)
        let value = try decodeLine(response.encodedLine())
        XCTAssertEqual(value, response.jsonValue)
        XCTAssertEqual(value["type"], "response")
        XCTAssertEqual(value["status"], "success")
        XCTAssertEqual(value["commandId"], "id-1")
        XCTAssertEqual(value["result"], result)
        XCTAssertNil(value["code"])
        XCTAssertEqual(response.commandId, "id-1")
    }

    func testErrorResponseCarriesMessageAndStableCode() throws {
        for code in CaptureErrorCode.allCases {
            let response = ControlResponse.failure(commandId: .null, error: CaptureError(code, "what happened: \(code) \u{1F3A5}"))
            let value = try decodeLine(response.encodedLine())
            XCTAssertEqual(value, response.jsonValue)
            XCTAssertEqual(value["status"], "error")
            XCTAssertEqual(value["commandId"], .null, "a null commandId is sent as null, not left out")
            XCTAssertEqual(value["result"]?.stringValue, "what happened: \(code) \u{1F3A5}")
            XCTAssertEqual(value["code"]?.stringValue, code.rawValue)
        }
        // Sorted keys, compact: byte-stable.
        let text = String(decoding: ControlResponse.failure(commandId: "c", error: CaptureError(.timeout, "t/x")).encodedLine(), as: UTF8.self)
        XCTAssertEqual(text, #"videodb_recorder|{"code":"TIMEOUT","commandId":"c","result":"t/x","status":"error","type":"response"}"# + "\n")
    }

    /// The contract written out by hand: a renamed code, a changed exit status, a code added
    /// without a line here, or a docs table that says otherwise fails (comparing the enum
    /// with itself could not).
    static let documentedCodes: [String: Int32] = [
        "INVALID_REQUEST": 64, "UNKNOWN_COMMAND": 64, "REQUEST_TOO_LARGE": 64, "INVALID_CHANNELS": 65,
        "DISPLAY_UNAVAILABLE": 69, "AUDIO_UNAVAILABLE": 69, "ENCODER_ERROR": 70, "INTERNAL_ERROR": 70,
        "CHANNEL_STALLED": 70, "IO_ERROR": 74, "INVALID_STATE": 75, "TIMEOUT": 75, "MONITOR_MISMATCH": 65,
        "PERMISSION_DENIED": 77, "INVALID_TOKEN": 77, "UPLOAD_REFUSED": 69, "ENDPOINT_INCOMPATIBLE": 69,
        "AGENT_NOT_RUNNING": 69,
    ]

    func testErrorCodesAndExitStatusesAreTheDocumentedOnes() throws {
        let inCode = Dictionary(uniqueKeysWithValues: CaptureErrorCode.allCases.map { ($0.rawValue, $0.exitStatus) })
        XCTAssertEqual(inCode, Self.documentedCodes)
        // docs/control-protocol.md section 8: "| `CODE` | meaning | status |".
        let docs = try String(contentsOfFile: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path + "/docs/control-protocol.md", encoding: .utf8)
        let section = try XCTUnwrap(docs.components(separatedBy: "## 8. Error codes").dropFirst().first?
            .components(separatedBy: "\n## ").first)
        var inDocs: [String: Int32] = [:]
        for line in section.split(separator: "\n") where line.hasPrefix("| `") {
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 3, let status = Int32(cells[cells.count - 1]) else { XCTFail("row: \(line)"); continue }
            inDocs[cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`"))] = status
        }
        XCTAssertEqual(inDocs, Self.documentedCodes, "docs/control-protocol.md section 8")
    }

    /// The framing of events (their bytes: ControlEventWireTests).
    func testEventRoundTrips() throws {
        let event = ControlEvent(.channelError(.init(code: .channelStalled, message: "ü\n\"/", recovered: false)), sessionId: "cap-1",
                                 channel: "mic:default", timestampUnixNs: 1_795_000_000_123_456_789)
        XCTAssertEqual(try ControlEvent(message: decodeLine(event.encodedLine())), event)

        let bare = ControlEvent(.tokenExpired(.init(message: "m", expiredAt: 1)), sessionId: nil, timestampUnixNs: 5)
        XCTAssertEqual(String(decoding: bare.encodedLine(), as: UTF8.self),
                       #"videodb_recorder|{"data":{"expiredAt":1,"message":"m"},"event":"token-expired","timestamp":"1970-01-01T00:00:00.000Z","timestampUnixNs":5,"type":"event"}"# + "\n",
                       "no sessionId, no channel")
        XCTAssertEqual(try ControlEvent(message: decodeLine(bare.encodedLine())), bare)
        // Responses are not events.
        XCTAssertNil(try ControlEvent(message: ControlResponse.success(commandId: "x", result: .null).jsonValue))
        // Every event name is kebab-case on the wire.
        for name in ControlEventName.allCases {
            XCTAssertTrue(name.rawValue.allSatisfy { $0.isLowercase || $0 == "-" }, name.rawValue)
        }
    }

    func testJSONValueRoundTripsThroughJSON() throws {
        let values: [JSONValue] = [.null, true, false, 0, .integer(Int64.max), .integer(Int64.min), .number(0.5), .number(-1e-300),
                                   "", "\u{0}\u{1F}\"\\/", .array([]), .object([:]),
                                   .object(["k": .array([.object(["x": .array([.null])])])])]
        for v in values {
            let data = try JSONCoding.encoder.encode(v)
            XCTAssertEqual(try JSONCoding.decoder.decode(JSONValue.self, from: data), v, String(decoding: data, as: UTF8.self))
        }
        // Non-finite numbers cannot be JSON: encoded as 0 rather than failing.
        XCTAssertEqual(try JSONCoding.decoder.decode(JSONValue.self, from: JSONCoding.encoder.encode(JSONValue.number(.infinity))), 0)
    }
}

/// The results the Wayland work added, byte for byte as docs/control-protocol.md shows them.
final class DisplayResultTests: XCTestCase {
    private func line(_ result: some Encodable) throws -> String {
        let response = ControlResponse.success(commandId: "c", result: try JSONValue(encoding: result))
        return String(decoding: response.encodedLine(), as: UTF8.self)
    }

    func testGetChannelsCarriesTheDisplayBackend() throws {
        let result = ChannelsResult(
            channels: [.init(channelId: "display:1", type: .video, name: "Display 1 (Meta-0 1920x1080+0+0, primary)")],
            problems: [.init(code: "AUDIO_UNAVAILABLE", message: "no audio server")],
            displayBackend: DisplayBackendInfo(backend: "wayland", reason: "a Wayland session (WAYLAND_DISPLAY=wayland-0)"))
        XCTAssertEqual(try line(result), #"videodb_recorder|{"commandId":"c","result":{"channels":[{"channel_id":"display:1","name":"Display 1 (Meta-0 1920x1080+0+0, primary)","type":"video"}],"displayBackend":{"backend":"wayland","reason":"a Wayland session (WAYLAND_DISPLAY=wayland-0)"},"problems":[{"code":"AUDIO_UNAVAILABLE","message":"no audio server"}]},"status":"success","type":"response"}"# + "\n")
        let decoded = try JSONValue(encoding: result).decode(ChannelsResult.self)
        XCTAssertEqual(decoded, result, "capturectl reads what the daemon writes")
    }

    func testPermissionResultsOfTheScreenOnWayland() throws {
        XCTAssertEqual(try line(PermissionResult(permission: "screen-capture", status: "granted", monitor: "Meta-0")),
                       #"videodb_recorder|{"commandId":"c","result":{"monitor":"Meta-0","permission":"screen-capture","status":"granted"},"status":"success","type":"response"}"# + "\n")
        XCTAssertEqual(try line(PermissionResult(permission: "screen-capture", status: "denied", reason: "declined", code: "PERMISSION_DENIED")),
                       #"videodb_recorder|{"commandId":"c","result":{"code":"PERMISSION_DENIED","permission":"screen-capture","reason":"declined","status":"denied"},"status":"success","type":"response"}"# + "\n")
    }
}
