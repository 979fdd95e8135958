/// Parses human durations as the command line takes them: `10s`, `500ms`,
/// `1.5s`, `2m`, `1h`, or a bare number of seconds. Returns nanoseconds.
public func parseDuration(_ text: String) throws(CaptureError) -> Int64 {
    let trimmed = text.trimmingSpaces()
    let units: [(String, Double)] = [("ms", 1e6), ("us", 1e3), ("ns", 1), ("s", 1e9), ("m", 60e9), ("h", 3600e9)]
    var number = trimmed
    var scale = 1e9
    for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
        number = String(trimmed.dropLast(suffix.count))
        scale = factor
        break
    }
    guard let value = Double(number), value.isFinite, value >= 0 else {
        throw CaptureError(.invalidRequest, "'\(text)' is not a duration (examples: 10s, 500ms, 1.5s, 2m)")
    }
    let ns = value * scale
    guard ns < 9.2e18 else { throw CaptureError(.invalidRequest, "duration '\(text)' is too long") }
    return Int64(ns.rounded())
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
