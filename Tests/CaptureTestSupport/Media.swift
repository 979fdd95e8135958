import CaptureCore
import Foundation

/// ffprobe/ffmpeg helpers for assertions on media files.
public enum Media {
    /// One stream as ffprobe reports it. Missing numbers are 0 (counts, sizes) or
    /// NaN (times, rates), so an assertion on them fails instead of passing by luck.
    public struct Stream: Sendable {
        public var index: Int
        /// "video", "audio", ...
        public var codecType: String
        /// e.g. "h264", "aac".
        public var codecName: String
        public var profile: String
        public var width: Int
        public var height: Int
        /// e.g. "yuv420p".
        public var pixelFormat: String
        /// Frames counted by decoding the whole stream (ffprobe -count_frames).
        public var frameCount: Int
        /// Packets counted by demuxing (ffprobe -count_packets).
        public var packetCount: Int
        /// Stream duration in seconds (the container's if the stream has none).
        public var duration: Double
        /// First timestamp in seconds.
        public var startTime: Double
        /// avg_frame_rate as a number (video).
        public var frameRate: Double
        public var sampleRate: Int
        public var channels: Int
        /// bit_rate in bit/s, 0 when unknown.
        public var bitRate: Int
    }

    /// What `probe` found: the first stream's fields, plus every stream and the container.
    public struct ProbeResult: Sendable {
        public var streams: [Stream]
        /// e.g. "mpegts".
        public var formatName: String
        public var formatDuration: Double
        public var formatStartTime: Double
        public var sizeBytes: Int

        public var first: Stream { streams[0] }
        public var codecType: String { first.codecType }
        public var codecName: String { first.codecName }
        public var profile: String { first.profile }
        public var width: Int { first.width }
        public var height: Int { first.height }
        public var pixelFormat: String { first.pixelFormat }
        public var frameCount: Int { first.frameCount }
        public var packetCount: Int { first.packetCount }
        public var duration: Double { first.duration }
        public var startTime: Double { first.startTime }
        public var frameRate: Double { first.frameRate }
        public var sampleRate: Int { first.sampleRate }
        public var channels: Int { first.channels }
        public var bitRate: Int { first.bitRate }

        /// The first stream of a type ("video", "audio").
        public func stream(_ codecType: String) -> Stream? { streams.first { $0.codecType == codecType } }
    }

    static let toolTimeout: Duration = .seconds(600)

    /// ffprobe with frame and packet counting (decodes the whole file).
    public static func probe(_ path: String) throws -> ProbeResult {
        try requireFile(path)
        let r = try runProcess(
            "ffprobe",
            ["-v", "error", "-count_frames", "-count_packets",
             "-show_entries",
             "stream=index,codec_type,codec_name,profile,width,height,pix_fmt,sample_rate,channels,nb_read_frames,nb_read_packets,duration,start_time,avg_frame_rate,bit_rate:format=format_name,duration,start_time,size",
             "-of", "json", path],
            timeout: toolTimeout)
        guard r.status == 0 else {
            throw CaptureError(.ioError, "ffprobe failed on \(path) (status \(r.status)): \(r.stderr)")
        }
        guard let root = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw CaptureError(.internalError, "ffprobe printed no JSON object for \(path): \(r.stdout.prefix(500))")
        }
        let format = root["format"] as? [String: Any] ?? [:]
        let formatDuration = number(format["duration"])
        let streams = (root["streams"] as? [[String: Any]] ?? []).map { s -> Stream in
            let d = number(s["duration"])
            return Stream(
                index: integer(s["index"]),
                codecType: s["codec_type"] as? String ?? "",
                codecName: s["codec_name"] as? String ?? "",
                profile: s["profile"] as? String ?? "",
                width: integer(s["width"]),
                height: integer(s["height"]),
                pixelFormat: s["pix_fmt"] as? String ?? "",
                frameCount: integer(s["nb_read_frames"]),
                packetCount: integer(s["nb_read_packets"]),
                duration: d.isNaN ? formatDuration : d,
                startTime: number(s["start_time"]),
                frameRate: rational(s["avg_frame_rate"]),
                sampleRate: integer(s["sample_rate"]),
                channels: integer(s["channels"]),
                bitRate: integer(s["bit_rate"]))
        }
        guard !streams.isEmpty else {
            throw CaptureError(.ioError, "\(path) has no streams (ffprobe: \(r.stderr))")
        }
        return ProbeResult(
            streams: streams,
            formatName: format["format_name"] as? String ?? "",
            formatDuration: formatDuration,
            formatStartTime: number(format["start_time"]),
            sizeBytes: integer(format["size"]))
    }

    /// What `ffmpeg -v error -i path -f null -` prints while decoding every stream:
    /// "" for a clean file.
    public static func decodeErrors(_ path: String) throws -> String {
        try requireFile(path)
        let r = try runProcess("ffmpeg", ["-nostdin", "-hide_banner", "-v", "error", "-i", path, "-f", "null", "-"],
                               timeout: toolTimeout)
        let text = r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.status != 0 && text.isEmpty { return "ffmpeg exited with status \(r.status)" }
        return text
    }

    /// Every packet of one stream in file order: presentation time and duration in
    /// seconds (NaN when absent) and whether it is a keyframe. `stream` is an ffprobe
    /// stream specifier: "0" (the first stream), "v:0", "a:0", ...
    public static func packetTimestamps(_ path: String, stream: String = "0") throws
        -> [(pts: Double, duration: Double, key: Bool)]
    {
        try requireFile(path)
        let r = try runProcess(
            "ffprobe",
            ["-v", "error", "-select_streams", stream, "-show_entries", "packet=pts_time,duration_time,flags",
             "-of", "compact=p=0", path],
            timeout: toolTimeout)
        guard r.status == 0 else {
            throw CaptureError(.ioError, "ffprobe failed on \(path) (status \(r.status)): \(r.stderr)")
        }
        var packets: [(pts: Double, duration: Double, key: Bool)] = []
        for line in r.stdout.split(separator: "\n") {
            var pts = Double.nan, duration = Double.nan, key = false
            for field in line.split(separator: "|") {
                guard let eq = field.firstIndex(of: "=") else { continue }
                let name = field[..<eq], value = field[field.index(after: eq)...]
                switch name {
                case "pts_time": pts = Double(value) ?? .nan
                case "duration_time": duration = Double(value) ?? .nan
                case "flags": key = value.hasPrefix("K")
                default: break
                }
            }
            packets.append((pts, duration, key))
        }
        return packets
    }

    /// The strongest frequency between 50 and 5000 Hz, in Hz, in the first `seconds`
    /// of the first audio stream (decoded to 48 kHz mono float). Hann-windowed FFT
    /// zero-padded to at most 0.73 Hz per bin, refined by parabolic interpolation:
    /// accurate to well under 1 Hz for a steady tone. Returns 0 for digital silence.
    public static func dominantFrequency(_ path: String, seconds: Double) throws -> Double {
        let samples = try decodeFloat(path, channels: 1, sampleRate: 48_000, seconds: seconds)
        guard samples.count >= 480 else {
            throw CaptureError(.ioError, "\(path): only \(samples.count) audio samples decoded; need at least 10 ms")
        }
        return Spectrum.dominantFrequency(samples, sampleRate: 48_000, from: 50, to: 5000)
    }

    /// RMS level of the whole first audio stream in dBFS (all channels; a full-scale
    /// sine is -3 dBFS). -infinity for digital silence.
    public static func rmsLevelDB(_ path: String) throws -> Double {
        let samples = try decodeFloat(path, channels: nil, sampleRate: nil, seconds: nil)
        guard !samples.isEmpty else { throw CaptureError(.ioError, "\(path): no audio samples decoded") }
        return rmsDB(samples: samples)
    }

    /// The strongest frequency between `low` and `high` Hz in mono `samples`
    /// (as `dominantFrequency(_:seconds:)`, for samples already in memory).
    public static func dominantFrequency(samples: some Collection<Float>, sampleRate: Double = 48_000,
                                         from low: Double = 50, to high: Double = 5000) -> Double {
        Spectrum.dominantFrequency(Array(samples), sampleRate: sampleRate, from: low, to: high)
    }

    /// RMS level of `samples` in dBFS; -infinity for digital silence or no samples.
    public static func rmsDB(samples: some Collection<Float>) -> Double {
        guard !samples.isEmpty else { return -.infinity }
        var sum = 0.0
        for s in samples { sum += Double(s) * Double(s) }
        let rms = (sum / Double(samples.count)).squareRoot()
        return rms > 0 ? 20 * log10(rms) : -.infinity
    }

    /// Every video frame's presentation time (seconds) and average luma (0-255)
    /// inside `crop` (x, y, width, height in source pixels).
    public static func frameLuma(_ path: String, crop: (x: Int, y: Int, width: Int, height: Int)) throws -> [(pts: Double, luma: Double)] {
        try requireFile(path)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("luma-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).txt").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let filter = "crop=\(crop.width):\(crop.height):\(crop.x):\(crop.y),signalstats,metadata=print:key=lavfi.signalstats.YAVG:file=\(out)"
        let r = try runProcess("ffmpeg", ["-nostdin", "-hide_banner", "-v", "error", "-i", path, "-map", "0:v:0",
                                          "-vf", filter, "-f", "null", "-"], timeout: toolTimeout)
        guard r.status == 0 else { throw CaptureError(.ioError, "ffmpeg signalstats failed on \(path): \(r.stderr)") }
        var frames: [(Double, Double)] = []
        var pts: Double?
        for line in try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n") {
            if let range = line.range(of: "pts_time:") {
                pts = Double(line[range.upperBound...].prefix { !$0.isWhitespace })
            } else if let range = line.range(of: "YAVG="), let p = pts, let y = Double(line[range.upperBound...]) {
                frames.append((p, y))
                pts = nil
            }
        }
        return frames
    }

    /// Decodes the first audio stream to interleaved 32-bit float samples.
    public static func decodeFloat(_ path: String, channels: Int?, sampleRate: Int?, seconds: Double?) throws -> [Float] {
        try requireFile(path)
        var args = ["-nostdin", "-hide_banner", "-v", "error", "-i", path, "-map", "0:a:0"]
        if let seconds { args += ["-t", String(seconds)] }
        if let channels { args += ["-ac", String(channels)] }
        if let sampleRate { args += ["-ar", String(sampleRate)] }
        args += ["-f", "f32le", "-c:a", "pcm_f32le", "-"]
        let r = try runProcessData("ffmpeg", args, timeout: toolTimeout)
        guard r.status == 0 else {
            throw CaptureError(.ioError, "ffmpeg could not decode audio from \(path) (status \(r.status)): \(r.stderr)")
        }
        let count = r.stdout.count / 4
        var samples = [Float](repeating: 0, count: count)
        samples.withUnsafeMutableBytes { dst in
            r.stdout.withUnsafeBytes { src in
                dst.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<(count * 4)]))
            }
        }
        return samples
    }

    private static func requireFile(_ path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw CaptureError(.ioError, "no such file: \(path)")
        }
    }

    private static func number(_ v: Any?) -> Double {
        if let s = v as? String { return Double(s) ?? .nan }
        if let n = v as? NSNumber { return n.doubleValue }
        return .nan
    }

    private static func integer(_ v: Any?) -> Int {
        if let n = v as? NSNumber { return n.intValue }
        if let s = v as? String { return Int(s) ?? 0 }
        return 0
    }

    private static func rational(_ v: Any?) -> Double {
        guard let s = v as? String else { return .nan }
        let parts = s.split(separator: "/")
        if parts.count == 2, let n = Double(parts[0]), let d = Double(parts[1]) { return d == 0 ? .nan : n / d }
        return Double(s) ?? .nan
    }
}

/// Spectrum analysis for `Media.dominantFrequency`.
enum Spectrum {
    static func dominantFrequency(_ input: [Float], sampleRate: Double, from low: Double, to high: Double) -> Double {
        let n = input.count
        var size = 65536
        while size < n { size <<= 1 }
        var re = [Double](repeating: 0, count: size)
        var im = [Double](repeating: 0, count: size)
        var mean = 0.0
        for s in input { mean += Double(s) }
        mean /= Double(n)
        var energy = 0.0
        re.withUnsafeMutableBufferPointer { r in
            input.withUnsafeBufferPointer { x in
                let scale = 2.0 * Double.pi / Double(n - 1)
                for i in 0..<n {
                    let v = Double(x[i]) - mean
                    energy += v * v
                    r[i] = v * (0.5 - 0.5 * cos(scale * Double(i)))
                }
            }
        }
        if energy == 0 { return 0 }
        fft(&re, &im)
        let binHz = sampleRate / Double(size)
        let lo = max(1, Int((low / binHz).rounded(.down)))
        let hi = min(size / 2 - 2, Int((high / binHz).rounded(.up)))
        var best = lo
        var bestPower = -1.0
        var power = [Double](repeating: 0, count: hi + 2)
        for k in (lo - 1)...(hi + 1) {
            power[k] = re[k] * re[k] + im[k] * im[k]
        }
        for k in lo...hi where power[k] > bestPower {
            bestPower = power[k]
            best = k
        }
        // Parabolic interpolation on log power around the peak.
        let a = log(max(power[best - 1], 1e-300))
        let b = log(max(power[best], 1e-300))
        let c = log(max(power[best + 1], 1e-300))
        let denominator = a - 2 * b + c
        let offset = denominator == 0 ? 0 : 0.5 * (a - c) / denominator
        return (Double(best) + max(-0.5, min(0.5, offset))) * binHz
    }

    /// In-place iterative radix-2 complex FFT; the count must be a power of two.
    static func fft(_ re: inout [Double], _ im: inout [Double]) {
        let n = re.count
        re.withUnsafeMutableBufferPointer { r in
            im.withUnsafeMutableBufferPointer { m in
                var j = 0
                for i in 1..<n {
                    var bit = n >> 1
                    while j & bit != 0 {
                        j ^= bit
                        bit >>= 1
                    }
                    j |= bit
                    if i < j {
                        r.swapAt(i, j)
                        m.swapAt(i, j)
                    }
                }
                var length = 2
                while length <= n {
                    let angle = -2.0 * Double.pi / Double(length)
                    let wRe = cos(angle), wIm = sin(angle)
                    let half = length / 2
                    var start = 0
                    while start < n {
                        var cRe = 1.0, cIm = 0.0
                        for k in 0..<half {
                            let u = start + k, v = u + half
                            let tRe = r[v] * cRe - m[v] * cIm
                            let tIm = r[v] * cIm + m[v] * cRe
                            r[v] = r[u] - tRe
                            m[v] = m[u] - tIm
                            r[u] += tRe
                            m[u] += tIm
                            let nRe = cRe * wRe - cIm * wIm
                            cIm = cRe * wIm + cIm * wRe
                            cRe = nRe
                        }
                        start += length
                    }
                    length <<= 1
                }
            }
        }
    }
}
