import CaptureControl
import CaptureCore
import XCTest

/// The control protocol's JSON reader: RFC 8259 and nothing more (what it refuses is what
/// two readers could understand differently).
final class StrictJSONTests: XCTestCase {
    func parse(_ text: String) throws(StrictJSON.SyntaxError) -> JSONValue { try StrictJSON.parse(Array(text.utf8)) }

    func testReadsWhatRFC8259Writes() throws {
        XCTAssertEqual(try parse(#" {"a":[1,-0,1.5,1e2,1.0,-9223372036854775808,true,false,null,"x\u00e9\ud83c\udfa5\n\/"]} "#),
                       .object(["a": .array([.integer(1), .integer(0), .number(1.5), .integer(100), .integer(1),
                                             .integer(Int64.min), .bool(true), .bool(false), .null, .string("xé🎥\n/")])]))
        XCTAssertEqual(try parse(#"{"big":9223372036854775808,"huge":1e300}"#),
                       .object(["big": .number(9_223_372_036_854_775_808), "huge": .number(1e300)]),
                       "an integer literal beyond Int64 is not that integer")
        XCTAssertEqual(try parse("\"\\u0000\""), .string("\u{0}"))
        XCTAssertNoThrow(try parse(String(repeating: "[", count: 512) + String(repeating: "]", count: 512)), "512 deep")
    }

    func testRefusesWhatLenientReadersLetThrough() {
        let refused: [(String, String)] = [
            (#"{"a":1,}"#, "must start with a string name"), ("[1,]", "not a JSON value"), (#"{"a":1 "b":2}"#, "',' or '}'"),
            (#"{"a":1,"a":2}"#, "appears twice"), (#"{"x":{"k":1,"k":1}}"#, "appears twice"),
            ("01", "leading zero"), ("+1", "not a JSON value"), (".5", "not a JSON value"), ("5.", "after '.'"),
            ("1e", "exponent"), ("NaN", "not a JSON value"), ("Infinity", "not a JSON value"), ("1e400", "beyond the range"),
            ("-1e400", "beyond the range"), (String(repeating: "9", count: 400), "beyond the range"),
            ("'a'", "not a JSON value"), ("\"a\tb\"", "control character"), (#""\ud800""#, "lone surrogate"),
            (#""\udc00\ud800""#, "lone surrogate"), (#""\ud800\u0041""#, "lone surrogate"), (#""\x41""#, "unknown escape"),
            (#""\u12""#, "four hex digits"), ("\"abc", "not closed"), ("{} {}", "data after"), ("/* c */ {}", "not a JSON value"),
            ("", "ends where a value should be"), ("\u{FEFF}{}", "not a JSON value"), ("tru", "not a JSON value"),
            (String(repeating: "[", count: 513) + String(repeating: "]", count: 513), "nested deeper than 512"),
        ]
        for (text, reason) in refused {
            do {
                let value = try parse(text)
                XCTFail("accepted \(text.debugDescription) as \(value)")
            } catch {
                XCTAssertTrue(error.reason.contains(reason), "\(text.debugDescription): \(error)")
            }
        }
        // Not UTF-8.
        XCTAssertThrowsError(try StrictJSON.parse([0x22, 0xC3, 0x28, 0x22]))
        XCTAssertThrowsError(try StrictJSON.parse([0x22, 0xED, 0xA0, 0x80, 0x22]), "an encoded surrogate")
    }

    /// Through the request parser: a name twice is INVALID_REQUEST with a null commandId, the
    /// reason says where.
    func testARequestWithANameTwiceIsRefused() {
        let line = Array((ControlFraming.prefix + #"{"command":"ping","commandId":"a","commandId":"b"}"#).utf8)
        guard case .failure(let e) = ControlRequest.parse(line: line) else { return XCTFail("accepted") }
        XCTAssertEqual(e.commandId, .null)
        XCTAssertEqual(e.error.code, .invalidRequest)
        XCTAssertTrue(e.error.message.contains("appears twice"), e.error.message)
    }
}
