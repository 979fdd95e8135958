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

/// `128k`, `4M`, `2500000` -> bits per second.
public func parseBitrate(_ text: String) throws(CaptureError) -> Int {
    var digits = Substring(text.trimmingSpaces())
    var scale = 1.0
    if let last = digits.last, "kKmM".contains(last) {
        scale = (last == "k" || last == "K") ? 1e3 : 1e6
        digits = digits.dropLast()
    }
    guard let value = Double(digits), value > 0, value * scale < 1e9 else {
        throw CaptureError(.invalidRequest, "'\(text)' is not a bitrate (examples: 128k, 4M)")
    }
    return Int(value * scale)
}

/// `2GiB`, `500MiB`, `1G`, `1048576` -> bytes (K/M/G/T are powers of 1024 too,
/// as in systemd's settings).
public func parseByteSize(_ text: String) throws(CaptureError) -> Int64 {
    var s = text.trimmingSpaces()
    for suffix in ["iB", "B"] where s.hasSuffix(suffix) { s = String(s.dropLast(suffix.count)); break }
    var scale: Double = 1
    if let last = s.last, let power = ["K": 1, "M": 2, "G": 3, "T": 4][String(last).uppercased()] {
        for _ in 0..<power { scale *= 1024 }
        s = String(s.dropLast())
    }
    guard let value = Double(s.trimmingSpaces()), value.isFinite, value >= 0, value * scale < 9.0e18 else {
        throw CaptureError(.invalidRequest, "'\(text)' is not a size (examples: 2GiB, 500MiB)")
    }
    return Int64((value * scale).rounded())
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
