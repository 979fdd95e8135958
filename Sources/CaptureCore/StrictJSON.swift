/// JSON exactly as RFC 8259 writes it, for the control protocol's request lines and the
/// endpoint's request bodies: one pass over the bytes into a `JSONValue`, refusing what lenient
/// parsers let through and two readers could understand differently.
///
/// Refused (each with the byte offset where it was found):
/// - anything outside the grammar: trailing commas, comments, single quotes, leading zeros,
///   `NaN`/`Infinity`, a `+` sign, bare control characters inside strings, trailing data;
/// - a name twice in one object (`{"commandId":"a","commandId":"b"}`: Foundation's decoder
///   takes the first, Python's and JavaScript's the last; the daemon and the endpoint take
///   neither);
/// - bytes that are not UTF-8, and `\u` escapes that leave a lone surrogate;
/// - numbers beyond a Double's range (`1e400`): there is nothing to hold them;
/// - nesting deeper than `maxDepth`.
///
/// Numbers: an integer literal within Int64 (`7`, `-0`), or a fraction or exponent whose
/// Double is integral and within Int64 (`1.0`, `1e2`), is `.integer`; any other finite
/// number `.number` (Double, correctly rounded), an integer literal beyond Int64 included.
public enum StrictJSON {
    public static let maxDepth = 512

    public struct SyntaxError: Error, Equatable, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "\(reason) at byte \(offset)" }
    }

    public static func parse(_ bytes: some Collection<UInt8>) throws(SyntaxError) -> JSONValue {
        let array = Array(bytes)
        var parser = Parser(bytes: array)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.at == array.count else { throw parser.error("data after the JSON value") }
        return value
    }

    private struct Parser {
        let bytes: [UInt8]
        var at = 0
        /// Scratch for one string's UTF-8 (reused: no allocation per string once grown).
        var scratch: [UInt8] = []

        init(bytes: [UInt8]) { self.bytes = bytes }

        func error(_ reason: String) -> SyntaxError { SyntaxError(offset: at, reason: reason) }

        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipWhitespace() {
            while at < bytes.count, bytes[at] == 0x20 || bytes[at] == 0x09 || bytes[at] == 0x0A || bytes[at] == 0x0D { at += 1 }
        }

        mutating func expect(_ literal: StaticString, _ value: JSONValue) throws(SyntaxError) -> JSONValue {
            let text = literal.withUTF8Buffer { Array($0) }
            guard at + text.count <= bytes.count, bytes[at..<(at + text.count)].elementsEqual(text) else {
                throw error("not a JSON value")
            }
            at += text.count
            return value
        }

        mutating func value(depth: Int) throws(SyntaxError) -> JSONValue {
            guard let b = peek else { throw error("the text ends where a value should be") }
            switch b {
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): return try expect("true", .bool(true))
            case UInt8(ascii: "f"): return try expect("false", .bool(false))
            case UInt8(ascii: "n"): return try expect("null", .null)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw error("not a JSON value")
            }
        }

        mutating func object(depth: Int) throws(SyntaxError) -> JSONValue {
            guard depth <= StrictJSON.maxDepth else { throw error("nested deeper than \(StrictJSON.maxDepth)") }
            at += 1
            var members: [String: JSONValue] = [:]
            skipWhitespace()
            if peek == UInt8(ascii: "}") {
                at += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw error("an object member must start with a string name") }
                let nameAt = at
                let name = try string()
                skipWhitespace()
                guard peek == UInt8(ascii: ":") else { throw error("':' expected after an object member's name") }
                at += 1
                skipWhitespace()
                let member = try value(depth: depth)
                guard members.updateValue(member, forKey: name) == nil else {
                    throw SyntaxError(offset: nameAt, reason: "the name \"\(name.prefix(64))\" appears twice in one object")
                }
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "}"):
                    at += 1
                    return .object(members)
                default: throw error("',' or '}' expected in an object")
                }
            }
        }

        mutating func array(depth: Int) throws(SyntaxError) -> JSONValue {
            guard depth <= StrictJSON.maxDepth else { throw error("nested deeper than \(StrictJSON.maxDepth)") }
            at += 1
            var elements: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") {
                at += 1
                return .array(elements)
            }
            while true {
                skipWhitespace()
                elements.append(try value(depth: depth))
                skipWhitespace()
                switch peek {
                case UInt8(ascii: ","): at += 1
                case UInt8(ascii: "]"):
                    at += 1
                    return .array(elements)
                default: throw error("',' or ']' expected in an array")
                }
            }
        }

        mutating func hex4() throws(SyntaxError) -> UInt32 {
            guard at + 4 <= bytes.count else { throw error("a \\u escape needs four hex digits") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[at]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw error("a \\u escape needs four hex digits")
                }
                v = v << 4 | d
                at += 1
            }
            return v
        }

        mutating func appendScalar(_ v: UInt32) {
            switch v {
            case 0..<0x80: scratch.append(UInt8(v))
            case 0x80..<0x800:
                scratch.append(UInt8(0xC0 | v >> 6))
                scratch.append(UInt8(0x80 | v & 0x3F))
            case 0x800..<0x10000:
                scratch.append(UInt8(0xE0 | v >> 12))
                scratch.append(UInt8(0x80 | v >> 6 & 0x3F))
                scratch.append(UInt8(0x80 | v & 0x3F))
            default:
                scratch.append(UInt8(0xF0 | v >> 18))
                scratch.append(UInt8(0x80 | v >> 12 & 0x3F))
                scratch.append(UInt8(0x80 | v >> 6 & 0x3F))
                scratch.append(UInt8(0x80 | v & 0x3F))
            }
        }

        mutating func string() throws(SyntaxError) -> String {
            let start = at
            at += 1
            scratch.removeAll(keepingCapacity: true)
            while true {
                guard at < bytes.count else { throw SyntaxError(offset: start, reason: "a string is not closed") }
                let c = bytes[at]
                switch c {
                case UInt8(ascii: "\""):
                    at += 1
                    guard let text = String(validating: scratch, as: UTF8.self) else {
                        throw SyntaxError(offset: start, reason: "a string is not UTF-8")
                    }
                    return text
                case UInt8(ascii: "\\"):
                    at += 1
                    guard let e = peek else { throw error("a string ends in an escape") }
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scratch.append(e)
                    case UInt8(ascii: "b"): scratch.append(0x08)
                    case UInt8(ascii: "f"): scratch.append(0x0C)
                    case UInt8(ascii: "n"): scratch.append(0x0A)
                    case UInt8(ascii: "r"): scratch.append(0x0D)
                    case UInt8(ascii: "t"): scratch.append(0x09)
                    case UInt8(ascii: "u"):
                        let escapeAt = at - 2
                        var v = try hex4()
                        if (0xD800..<0xDC00).contains(v) {
                            // A high surrogate: only with a low one right after.
                            guard at + 2 <= bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                                throw SyntaxError(offset: escapeAt, reason: "a lone surrogate escape")
                            }
                            at += 2
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else {
                                throw SyntaxError(offset: escapeAt, reason: "a lone surrogate escape")
                            }
                            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..<0xE000).contains(v) {
                            throw SyntaxError(offset: escapeAt, reason: "a lone surrogate escape")
                        }
                        appendScalar(v)
                    default:
                        at -= 1
                        throw error("an unknown escape")
                    }
                case 0..<0x20:
                    throw error("a control character inside a string (escape it)")
                default:
                    scratch.append(c)
                    at += 1
                }
            }
        }

        mutating func number() throws(SyntaxError) -> JSONValue {
            let start = at
            var integral = true
            if peek == UInt8(ascii: "-") { at += 1 }
            guard let first = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
                throw error("a digit expected in a number")
            }
            at += 1
            if first != UInt8(ascii: "0") {
                while let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) { at += 1 }
            } else if let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) {
                throw error("a number with a leading zero")
            }
            if peek == UInt8(ascii: ".") {
                integral = false
                at += 1
                guard let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) else { throw error("a digit expected after '.'") }
                while let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) { at += 1 }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                integral = false
                at += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) else { throw error("a digit expected in an exponent") }
                while let d = peek, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(d) { at += 1 }
            }
            let text = String(decoding: bytes[start..<at], as: UTF8.self)
            if integral, let i = Int64(text) { return .integer(i) }
            guard let d = Double(text), d.isFinite else {
                throw SyntaxError(offset: start, reason: "a number beyond the range of a double")
            }
            // An integer literal beyond Int64 stays a Double (it is not that integer); a
            // fraction or exponent that comes out integral is one.
            if !integral, d == d.rounded(), d >= -9_223_372_036_854_775_808.0, d < 9_223_372_036_854_775_808.0 {
                return .integer(Int64(d))
            }
            return .number(d)
        }
    }
}
