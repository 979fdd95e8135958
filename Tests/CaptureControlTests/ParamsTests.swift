import CaptureControl
import CaptureCore
import XCTest

final class ParamsTests: XCTestCase {
    private func request(_ command: String, _ params: [String: JSONValue]) -> ControlRequest {
        ControlRequest(command: command, commandId: "t", params: params)
    }

    /// Runs `body`, which must throw a CaptureError with `code`; returns its message.
    @discardableResult
    private func rejects(_ what: String, code: CaptureErrorCode = .invalidRequest, file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws(CaptureError) -> Any) -> String {
        do {
            let value = try body()
            XCTFail("\(what): accepted (\(value)) but should be rejected with \(code.rawValue)", file: file, line: line)
            return ""
        } catch {
            XCTAssertEqual(error.code, code, "\(what): \(error)", file: file, line: line)
            return error.message
        }
    }

    // MARK: ParamReader

    func testParamReaderTypeErrorsNameTheParameter() throws {
        let p = ParamReader(request("someCommand", [
            "s": 5, "b": "true", "i": "12", "f": .number(1.5), "a": "x", "items": .array(["ok", 3]),
            "objects": .array([.object([:]), "no"]), "long": .string(String(repeating: "a", count: 5000)),
            "many": .array(Array(repeating: "x", count: 65)), "empty": "",
        ]))
        var m = rejects("string") { () throws(CaptureError) in try p.string("s") as Any }
        XCTAssertTrue(m.contains("someCommand") && m.contains("params.s") && m.contains("a string") && m.contains("number"), m)
        m = rejects("bool") { () throws(CaptureError) in try p.bool("b") as Any }
        XCTAssertTrue(m.contains("params.b") && m.contains("true or false") && m.contains("string"), m)
        m = rejects("integer from string") { () throws(CaptureError) in try p.integer("i") as Any }
        XCTAssertTrue(m.contains("params.i") && m.contains("an integer"), m)
        m = rejects("integer from fraction") { () throws(CaptureError) in try p.integer("f") as Any }
        XCTAssertTrue(m.contains("params.f"), m)
        m = rejects("array") { () throws(CaptureError) in try p.stringArray("a") as Any }
        XCTAssertTrue(m.contains("params.a") && m.contains("array"), m)
        m = rejects("array item") { () throws(CaptureError) in try p.stringArray("items") as Any }
        XCTAssertTrue(m.contains("params.items[1]"), m)
        m = rejects("object item") { () throws(CaptureError) in try p.objectArray("objects") as Any }
        XCTAssertTrue(m.contains("params.objects[1]") && m.contains("an object"), m)
        m = rejects("too long") { () throws(CaptureError) in try p.string("long") as Any }
        XCTAssertTrue(m.contains("params.long") && m.contains("4096"), m)
        m = rejects("too many") { () throws(CaptureError) in try p.stringArray("many") as Any }
        XCTAssertTrue(m.contains("params.many") && m.contains("64"), m)
        m = rejects("required but empty") { () throws(CaptureError) in try p.requiredString("empty") }
        XCTAssertTrue(m.contains("params.empty") && m.contains("required"), m)
        m = rejects("required but missing") { () throws(CaptureError) in try p.requiredString("absent") }
        XCTAssertTrue(m.contains("params.absent"), m)

        // Absent and null read as nil; good values read.
        XCTAssertNil(try p.string("absent"))
        XCTAssertNil(try ParamReader(request("c", ["n": .null])).integer("n"))
        let good = ParamReader(request("c", ["s": "x", "b": false, "i": 12, "d": .number(3.0), "a": .array(["p", "q"])]))
        XCTAssertEqual(try good.string("s"), "x")
        XCTAssertEqual(try good.bool("b"), false)
        XCTAssertEqual(try good.integer("i"), 12)
        XCTAssertEqual(try good.integer("d"), 3, "an integral number is an integer")
        XCTAssertEqual(try good.stringArray("a"), ["p", "q"])
        // Huge numbers are not integers.
        XCTAssertThrowsError(try ParamReader(request("c", ["n": .number(1e300)])).integer("n"))
    }

    // MARK: startRecording

    func testStartRecordingParamsAcceptGoodInput() throws {
        let p = try StartRecordingParams(request("startRecording", [
            "sessionId": "cap-1", "uploadToken": "tok", "tokenExpiresAt": 1_800_000_000, "endpoint": "wss://example.com/x",
            "channels": .array([
                .object(["channel_id": "display:1", "type": "video", "name": "Display 1", "is_primary": true]),
                .object(["channel_id": "mic:default", "store": false]),
                .object(["channelId": "system_audio:default", "isPrimary": false, "store": true]),
                .object(["channel_id": "mic:alsa_input.usb-1", "unknownKey": .array([])]),
            ]),
            "somethingNew": "ignored",
        ]))
        XCTAssertEqual(p.sessionId, "cap-1")
        XCTAssertEqual(p.uploadToken, "tok")
        XCTAssertEqual(p.tokenExpiresAtUnixSeconds, 1_800_000_000)
        XCTAssertEqual(p.endpoint, "wss://example.com/x")
        XCTAssertEqual(p.channels.map(\.id), [.display(1), .microphone(nil), .systemAudio(nil), .microphone("alsa_input.usb-1")])
        XCTAssertEqual(p.channels.map(\.store), [true, false, true, true])
        XCTAssertEqual(p.channels.map(\.isPrimary), [true, false, false, false])

        let empty = try StartRecordingParams(request("startRecording", [:]))
        XCTAssertNil(empty.sessionId)
        XCTAssertEqual(empty.channels, [])
        XCTAssertEqual(try StartRecordingParams(request("startRecording", ["channels": .array([])])).channels, [])
    }

    func testStartRecordingParamsRejectBadInput() {
        let bad: [(String, [String: JSONValue], CaptureErrorCode)] = [
            ("channels not an array", ["channels": "display:1"], .invalidRequest),
            ("channel not an object", ["channels": .array(["display:1"])], .invalidRequest),
            ("channel without id", ["channels": .array([.object([:])])], .invalidRequest),
            ("channel id a number", ["channels": .array([.object(["channel_id": 1])])], .invalidRequest),
            ("store a string", ["channels": .array([.object(["channel_id": "display:1", "store": "yes"])])], .invalidRequest),
            ("is_primary a number", ["channels": .array([.object(["channel_id": "display:1", "is_primary": 1])])], .invalidRequest),
            ("too many channels", ["channels": .array(Array(repeating: .object(["channel_id": "display:1"]), count: 65))], .invalidRequest),
            ("sessionId a number", ["sessionId": 5], .invalidRequest),
            ("sessionId too long", ["sessionId": .string(String(repeating: "s", count: 129))], .invalidRequest),
            ("tokenExpiresAt a string", ["tokenExpiresAt": "soon"], .invalidRequest),
            ("uploadToken an object", ["uploadToken": .object([:])], .invalidRequest),
            ("endpoint a bool", ["endpoint": true], .invalidRequest),
            ("unknown channel prefix", ["channels": .array([.object(["channel_id": "webcam:1"])])], .invalidChannels),
            ("channel without prefix", ["channels": .array([.object(["channel_id": "bogus"])])], .invalidChannels),
            ("display 0", ["channels": .array([.object(["channel_id": "display:0"])])], .invalidChannels),
            ("display not a number", ["channels": .array([.object(["channel_id": "display:one"])])], .invalidChannels),
            ("empty mic name", ["channels": .array([.object(["channel_id": "mic:"])])], .invalidChannels),
        ]
        for (what, params, code) in bad {
            let m = rejects(what, code: code) { () throws(CaptureError) in try StartRecordingParams(request("startRecording", params)) }
            XCTAssertFalse(m.isEmpty, what)
        }
        let m = rejects("named") { () throws(CaptureError) in
            try StartRecordingParams(request("startRecording", ["channels": .array([.object(["channel_id": "display:1"]), .object(["store": true])])]))
        }
        XCTAssertTrue(m.contains("channels[1].channel_id"), m)
    }

    // MARK: tracks, token, subscriptions

    func testTracksParams() {
        XCTAssertEqual(try TracksParams(request("pauseTracks", [:])).tracks, Set(Track.allCases), "absent: every track")
        XCTAssertEqual(try TracksParams(request("pauseTracks", ["tracks": .null])).tracks, Set(Track.allCases))
        XCTAssertEqual(try TracksParams(request("pauseTracks", ["tracks": .array(["mic", "screen", "mic"])])).tracks, [.mic, .screen])
        XCTAssertEqual(try TracksParams(request("resumeTracks", ["tracks": .array(["system_audio"])])).tracks, [.systemAudio])

        var m = rejects("tracks a number") { () throws(CaptureError) in try TracksParams(request("pauseTracks", ["tracks": 5])) }
        XCTAssertTrue(m.contains("pauseTracks") && m.contains("params.tracks"), m)
        m = rejects("unknown track") { () throws(CaptureError) in try TracksParams(request("resumeTracks", ["tracks": .array(["webcam"])])) }
        XCTAssertTrue(m.contains("resumeTracks") && m.contains("webcam"), m)
        m = rejects("empty") { () throws(CaptureError) in try TracksParams(request("pauseTracks", ["tracks": .array([])])) }
        XCTAssertTrue(m.contains("empty"), m)
        rejects("track a number") { () throws(CaptureError) in try TracksParams(request("pauseTracks", ["tracks": .array([1])])) }
        rejects("tracks a string") { () throws(CaptureError) in try TracksParams(request("pauseTracks", ["tracks": "mic"])) }
        rejects("too many") { () throws(CaptureError) in
            try TracksParams(request("pauseTracks", ["tracks": .array(Array(repeating: "mic", count: 17))]))
        }
    }

    func testUpdateTokenParams() throws {
        let p = try UpdateTokenParams(request("updateToken", ["token": "abc.def-ghi_~", "expiresAt": 1_900_000_000]))
        XCTAssertEqual(p.token, "abc.def-ghi_~")
        XCTAssertEqual(p.expiresAtUnixSeconds, 1_900_000_000)
        XCTAssertNil(try UpdateTokenParams(request("updateToken", ["token": "t"])).expiresAtUnixSeconds)

        var m = rejects("no token") { () throws(CaptureError) in try UpdateTokenParams(request("updateToken", [:])) }
        XCTAssertTrue(m.contains("params.token"), m)
        rejects("empty token") { () throws(CaptureError) in try UpdateTokenParams(request("updateToken", ["token": ""])) }
        m = rejects("token a number") { () throws(CaptureError) in try UpdateTokenParams(request("updateToken", ["token": 5])) }
        XCTAssertTrue(m.contains("params.token"), m)
        m = rejects("expiresAt a string") { () throws(CaptureError) in
            try UpdateTokenParams(request("updateToken", ["token": "t", "expiresAt": "tomorrow"]))
        }
        XCTAssertTrue(m.contains("params.expiresAt"), m)
        for absurd: Int64 in [-1, -99_999_999_999_999, 253_402_300_800, .max] {
            m = rejects("expiresAt \(absurd)") { () throws(CaptureError) in
                try UpdateTokenParams(request("updateToken", ["token": "t", "expiresAt": .integer(absurd)]))
            }
            XCTAssertTrue(m.contains("params.expiresAt"), m)
        }
        XCTAssertEqual(try UpdateTokenParams(request("updateToken", ["token": "t", "expiresAt": 0])).expiresAtUnixSeconds, 0,
                       "an expiry in the past is a token already expired, not an error")
        rejects("too long") { () throws(CaptureError) in
            try UpdateTokenParams(request("updateToken", ["token": .string(String(repeating: "t", count: 16385))]))
        }
        for bad in ["has space", "tab\there", "new\nline", "ünï", "nul\u{0}"] {
            rejects("token \(bad.debugDescription)", code: .invalidToken) { () throws(CaptureError) in
                try UpdateTokenParams(request("updateToken", ["token": .string(bad)]))
            }
        }
    }

    func testSubscribeParams() {
        XCTAssertEqual(try SubscribeParams(request("subscribeEvents", [:])).events, Set(ControlEventName.allCases))
        XCTAssertEqual(try SubscribeParams(request("subscribeEvents", ["events": .array(["recording-started", "channel-error"])])).events,
                       [.recordingStarted, .channelError])
        XCTAssertEqual(try SubscribeParams(request("unsubscribeEvents", ["events": .array([])])).events, [])
        let m = rejects("unknown event") { () throws(CaptureError) in
            try SubscribeParams(request("subscribeEvents", ["events": .array(["recording_started"])]))
        }
        XCTAssertTrue(m.contains("recording_started") && m.contains("recording-started"), m)
        rejects("events a string") { () throws(CaptureError) in try SubscribeParams(request("subscribeEvents", ["events": "all"])) }
        rejects("events item a number") { () throws(CaptureError) in
            try SubscribeParams(request("subscribeEvents", ["events": .array([1])]))
        }
    }

    func testPermissionSpellings() {
        XCTAssertEqual(Permission(wire: "screen-capture"), .screenCapture)
        XCTAssertEqual(Permission(wire: "screen_capture"), .screenCapture)
        XCTAssertEqual(Permission(wire: "mic"), .microphone)
        XCTAssertEqual(Permission(wire: "system_audio"), .systemAudio)
        XCTAssertNil(Permission(wire: "camera"))
        XCTAssertNil(Permission(wire: ""))
    }
}
