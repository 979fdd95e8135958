#if canImport(Glibc)
import Glibc
#endif

// The few pieces of Foundation's string formatting the tools print with
// (String(format:), trimmingCharacters(in:), padding(toLength:...)), without
// Foundation: its formatting lives in FoundationInternationalization, which
// brings ICU's data (some 30 MB) into every binary.

extension Double {
    /// printf's `%.<digits>f`, which is what String(format: "%.1f", x) printed:
    /// `2.25.fixed(1) == "2.2"`, `0.05.fixed(1) == "0.1"`, "nan", "inf", "-0.0".
    public func fixed(_ digits: Int) -> String {
        let precision = Int32(clamping: Swift.max(0, digits))
        var capacity = 64
        while true {
            var buffer = [CChar](repeating: 0, count: capacity)
            let n = withVaList([precision, self]) { vsnprintf(&buffer, capacity, "%.*f", $0) }
            guard n >= 0 else { return "\(self)" }
            if Int(n) < capacity {
                return String(decoding: buffer[0..<Int(n)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            capacity = Int(n) + 1
        }
    }
}

extension StringProtocol {
    /// Without leading and trailing white space, the same scalars as Foundation's sets:
    /// `trimmingCharacters(in: .whitespacesAndNewlines)` (general category Z*, U+000A-U+000D,
    /// U+0085), or with `newlines: false` `trimmingCharacters(in: .whitespaces)` (category Zs
    /// and U+0009). Both also hold U+200B (zero width space), as CoreFoundation's do.
    public func trimmingWhitespace(newlines: Bool = true) -> String {
        let scalars = Substring(self).unicodeScalars
        func isSpace(_ s: Unicode.Scalar) -> Bool {
            switch s.properties.generalCategory {
            case .spaceSeparator: return true
            case .lineSeparator, .paragraphSeparator: return newlines
            default: return s == "\t" || s == "\u{200B}" || (newlines && ((0x0A...0x0D).contains(s.value) || s.value == 0x85))
            }
        }
        guard let first = scalars.firstIndex(where: { !isSpace($0) }),
              let last = scalars.lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(scalars[first...last])
    }

    /// Space-padded, or cut, to `length` characters: `padding(toLength: length, withPad: " ", startingAt: 0)`.
    public func padded(toLength length: Int) -> String {
        let count = self.count
        if count >= length { return String(prefix(Swift.max(0, length))) }
        return String(self) + String(repeating: " ", count: length - count)
    }
}
