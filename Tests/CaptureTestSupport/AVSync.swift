import CaptureCore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The stimulus, the detectors and the bookkeeping of the A/V synchronisation tests (X11:
/// CaptureAgentTests.AVSyncTests, Wayland: WaylandCaptureTests.WaylandAVSyncTests); the method
/// and its error budget are described with AVSyncTests.
public enum AVSync {
    // The file: 640x360 at 50 fps, black; flash k (k = 0..20) is 5 white frames (100 ms) from
    // frame 50 + 39k, i.e. t = 1 + 0.78k s; beep k is 100 ms of 1 kHz at -6 dBFS from the same
    // instant (sample 48000 + 37440k, starting at phase 0); silence otherwise. mpeg4 (intra
    // every second) + PCM in Matroska: cheap to decode, no audio codec delay. A flash comes
    // less than a second after any instant: a recording started while the file plays has
    // one in its first second, wherever it starts.
    public static let playerWidth = 640
    public static let playerHeight = 360
    public static let movieFps = 50
    public static let movieSeconds = 17.0
    public static let firstFlash = 1.0
    public static let flashSpacing = 0.78
    public static let flashCount = 21
    public static let flashFrames = 5
    public static let beepSamples = 4800

    // The recording.
    public static let fps = 60
    public static let recordDuration = "13s"
    /// The middle of the player's window (it maps at 0,0 with no window manager).
    public static let recordedCrop = (x: 160, y: 90, width: 320, height: 180)

    // The verdict.
    public static let requiredFlashes = 10
    public static let worstAllowedMs = 40.0
    /// A flash and a beep further apart than this are not a pair: half the spacing, so that
    /// every flash has its nearest beep as its pair, however far off (a beep 300 ms late is a
    /// pair that fails the bound, not a flash quietly left out).
    public static let pairWindow = 0.39

    public static func makeMovie(_ path: String, beepDelayMs: Int) throws {
        let spacingFrames = Int((flashSpacing * Double(movieFps)).rounded())            // 39
        let firstFrame = Int((firstFlash * Double(movieFps)).rounded())                  // 50
        let spacingSamples = Int((flashSpacing * 48_000).rounded())                      // 37440
        let firstSample = Int(firstFlash * 48_000) + beepDelayMs * 48                    // 48000 (+ delay)
        let video = "color=c=black:s=\(playerWidth)x\(playerHeight):r=\(movieFps):d=\(movieSeconds),"
            + "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:"
            + "enable='gte(n\\,\(firstFrame))*lt(mod(n-\(firstFrame)\\,\(spacingFrames))\\,\(flashFrames))',format=yuv420p"
        let m = "(n-\(firstSample))"
        let audio = "aevalsrc='gte(\(m)\\,0)*lt(mod(\(m)\\,\(spacingSamples))\\,\(beepSamples))*0.5*sin(2*PI*1000*\(m)/48000)'"
            + ":s=48000:c=stereo:d=\(movieSeconds)"
        let r = try runProcess("ffmpeg", [
            "-nostdin", "-hide_banner", "-v", "error", "-y",
            "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio,
            "-c:v", "mpeg4", "-q:v", "2", "-g", "\(movieFps)", "-c:a", "pcm_s16le", path,
        ], timeout: .seconds(120))
        guard r.status == 0 else {
            throw CaptureError(.internalError, "ffmpeg could not make the flash/beep file (status \(r.status)): \(r.stderr)")
        }
    }

    /// Mutes the rig's 1 kHz tone (sink input "rig-tone-1000hz" on "spk"), so that spk.monitor
    /// carries only what ffplay plays. The stream stays connected, so the sink keeps its 20 ms
    /// latency.
    public static func muteRigTone(_ rig: TestRig) throws {
        let env = rig.childEnvironment(["DISPLAY": nil, "LC_ALL": "C"])
        try muteRigTone { args in try runProcess("pactl", args, environment: env, timeout: .seconds(10)) }
    }

    /// The same through `pactl`, however it runs (as the desktop's user, say).
    public static func muteRigTone(pactl: ([String]) throws -> (status: Int32, stdout: String, stderr: String)) throws {
        let list = try pactl(["list", "sink-inputs"])
        guard list.status == 0 else { throw CaptureError(.internalError, "pactl list sink-inputs failed: \(list.stderr)") }
        var current: String?
        var tones: [String] = []
        for line in list.stdout.split(separator: "\n") {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.hasPrefix("Sink Input #") {
                current = String(text.dropFirst("Sink Input #".count))
            } else if text == "media.name = \"rig-tone-1000hz\"", let current {
                tones.append(current)
            }
        }
        guard !tones.isEmpty else {
            throw CaptureError(.internalError, "the rig's 1 kHz tone stream was not found:\n\(list.stdout)")
        }
        for id in tones {
            let r = try pactl(["set-sink-input-mute", id, "1"])
            guard r.status == 0 else { throw CaptureError(.internalError, "pactl set-sink-input-mute \(id) 1 failed: \(r.stderr)") }
        }
    }

    public static func executable(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        throw CaptureError(.ioError, "\(name) not found in PATH (\(path)); run scripts/install-deps.sh")
    }

    // MARK: detectors

    public struct Flashes {
        /// Estimated appearance times on the session timeline (s).
        public var onsets: [Double]
        public var dark: Double
        public var bright: Double
    }

    /// Rising edges of the luma through the midpoint of its range, at least 0.5 s apart, each
    /// placed `lead` seconds before its frame's timestamp (+ `start`, the file's first timestamp:
    /// ffmpeg counts from there). A recording that starts inside a flash does not count it.
    public static func flashOnsets(_ frames: [(pts: Double, luma: Double)], start: Double, lead: Double) -> Flashes {
        let lumas = frames.map(\.luma)
        let dark = lumas.min() ?? 0
        let bright = lumas.max() ?? 0
        guard bright - dark > 100 else { return Flashes(onsets: [], dark: dark, bright: bright) }
        let threshold = (dark + bright) / 2
        var onsets: [Double] = []
        var wasDark = false
        for frame in frames {
            let t = frame.pts + start
            if frame.luma > threshold {
                if wasDark, onsets.last.map({ t - $0 > 0.5 }) ?? true { onsets.append(t - lead) }
                wasDark = false
            } else {
                wasDark = true
            }
        }
        return Flashes(onsets: onsets, dark: dark, bright: bright)
    }

    public struct Beeps {
        /// Onset times on the session timeline (s).
        public var onsets: [Double]
        public var sampleIndices: [Int]
        /// RMS (1 ms windows) of the loudest beep and the median (the silence between beeps).
        public var peak: Double
        public var floor: Double
    }

    public static let rmsWindow = 48   // 1 ms at 48 kHz: one period of the beep, so the RMS has no ripple

    /// The samples (48 kHz mono) where the RMS of the last 1 ms rises above 30% of its maximum,
    /// at least 0.5 s apart. Nothing when the loudest 1 ms is below -30 dBFS or the silence
    /// between beeps is not at least 20 dB below it (then something else plays into the sink).
    public static func beepOnsets(_ samples: [Float], start: Double) -> Beeps {
        let w = rmsWindow
        guard samples.count > w else { return Beeps(onsets: [], sampleIndices: [], peak: 0, floor: 0) }
        var prefix = [Double](repeating: 0, count: samples.count + 1)
        for i in 0..<samples.count { prefix[i + 1] = prefix[i] + Double(samples[i]) * Double(samples[i]) }
        func rms(endingAt i: Int) -> Double { (max(0, prefix[i + 1] - prefix[i + 1 - w]) / Double(w)).squareRoot() }
        var peak = 0.0
        var strided: [Double] = []
        for i in (w - 1)..<samples.count {
            let r = rms(endingAt: i)
            if r > peak { peak = r }
            if i % w == 0 { strided.append(r) }
        }
        strided.sort()
        let floor = strided.isEmpty ? 0 : strided[strided.count / 2]
        guard peak > 0.0316, floor < peak * 0.1 else { return Beeps(onsets: [], sampleIndices: [], peak: peak, floor: floor) }
        let threshold = 0.3 * peak
        var onsets: [Double] = []
        var indices: [Int] = []
        var above = rms(endingAt: w - 1) > threshold
        for i in w..<samples.count {
            let now = rms(endingAt: i) > threshold
            if now && !above, indices.last.map({ i - $0 > 24_000 }) ?? true {
                indices.append(i)
                onsets.append(start + Double(i) / 48_000)
            }
            above = now
        }
        return Beeps(onsets: onsets, sampleIndices: indices, peak: peak, floor: floor)
    }

    /// The clock (s into the file) of ffplay's last status line, if it printed one.
    public static func playerClock(_ text: String) -> Double? {
        for line in text.split(whereSeparator: { $0 == "\r" || $0 == "\n" }).reversed() {
            let tokens = line.split(separator: " ")
            if let i = tokens.firstIndex(of: "A-V:"), i > tokens.startIndex, let clock = Double(tokens[i - 1]) { return clock }
        }
        return nil
    }

    /// ffplay's status lines ("  12.76 A-V: -0.023 fd=   0 aq= ..." separated by CR): the median
    /// A-V (ms) once the file is 1 s in, its range, and the frames it dropped (fd, the last value).
    public static func ffplayStatus(_ text: String) -> (medianAVMs: Double?, rangeMs: (Double, Double)?, droppedFrames: Int) {
        var diffs: [Double] = []
        var dropped = 0
        for line in text.split(whereSeparator: { $0 == "\r" || $0 == "\n" }) {
            let tokens = line.split(separator: " ")
            guard let i = tokens.firstIndex(of: "A-V:"), i > tokens.startIndex, i + 1 < tokens.endIndex,
                  let clock = Double(tokens[i - 1]), let diff = Double(tokens[i + 1]) else { continue }
            if let f = tokens.firstIndex(where: { $0.hasPrefix("fd=") }) {
                let inline = tokens[f].dropFirst(3)
                if let n = Int(inline.isEmpty && f + 1 < tokens.endIndex ? tokens[f + 1] : inline) { dropped = n }
            }
            if clock >= 1.0 { diffs.append(diff * 1000) }
        }
        guard !diffs.isEmpty else { return (nil, nil, dropped) }
        let sorted = diffs.sorted()
        return (sorted[sorted.count / 2], (sorted.first!, sorted.last!), dropped)
    }

    // MARK: verdict

    public struct Pair {
        public var flash: Double
        public var beep: Double
        /// beep - flash in the recording (ms).
        public var rawMs: Double
        /// rawMs + ffplay's A-V: what the recording adds (ms).
        public var offsetMs: Double
    }

    public struct Run {
        public var flashes: Flashes
        public var beeps: Beeps
        public var beepHz: Double
        public var playerAVMs: Double?
        public var playerAVRangeMs: (Double, Double)?
        public var playerDroppedFrames: Int
        public var recordSummary: String
        public var playerTail: String

        public init(flashes: Flashes, beeps: Beeps, beepHz: Double, playerAVMs: Double?, playerAVRangeMs: (Double, Double)?,
                    playerDroppedFrames: Int, recordSummary: String, playerTail: String) {
            self.flashes = flashes
            self.beeps = beeps
            self.beepHz = beepHz
            self.playerAVMs = playerAVMs
            self.playerAVRangeMs = playerAVRangeMs
            self.playerDroppedFrames = playerDroppedFrames
            self.recordSummary = recordSummary
            self.playerTail = playerTail
        }

        public var pairs: [Pair] {
            flashes.onsets.compactMap { flash in
                guard let beep = beeps.onsets.min(by: { abs($0 - flash) < abs($1 - flash) }),
                      abs(beep - flash) <= AVSync.pairWindow else { return nil }
                let raw = (beep - flash) * 1000
                return Pair(flash: flash, beep: beep, rawMs: raw, offsetMs: raw + (playerAVMs ?? 0))
            }
        }

        public var medianMs: Double { AVSync.median(pairs.map(\.offsetMs)) }
        public var worstMs: Double { pairs.map { abs($0.offsetMs) }.max() ?? .infinity }

        /// Flashes with no beep within `pairWindow`: none unless a beep is missing altogether.
        public var unpairedFlashes: Int { flashes.onsets.count - pairs.count }

        public var passes: Bool {
            pairs.count >= AVSync.requiredFlashes && unpairedFlashes == 0 && playerAVMs != nil
                && worstMs <= AVSync.worstAllowedMs
        }

        public func report(attempt: Int?) -> String {
            func ms(_ v: Double) -> String { String(format: "%+.1f", v) }
            var lines: [String] = []
            let pairs = self.pairs
            lines.append("AVSyncTests\(attempt.map { " attempt \($0)" } ?? ""): \(flashes.onsets.count) flashes "
                + "(luma \(Int(flashes.dark))..\(Int(flashes.bright))), \(beeps.onsets.count) beeps "
                + "(1 ms RMS peak \(String(format: "%.3f", beeps.peak)), silence \(String(format: "%.4f", beeps.floor)), "
                + "\(String(format: "%.0f", beepHz)) Hz), \(pairs.count) pairs, \(unpairedFlashes) flashes without a beep")
            if let av = playerAVMs, let range = playerAVRangeMs {
                lines.append("  ffplay A-V (audio clock - video clock) median \(ms(av)) ms (\(ms(range.0))..\(ms(range.1))), "
                    + "dropped frames \(playerDroppedFrames)")
            } else {
                lines.append("  ffplay printed no A-V status; dropped frames \(playerDroppedFrames); its stderr ends:\n\(playerTail)")
            }
            for (k, p) in pairs.enumerated() {
                lines.append("  flash \(k): \(String(format: "%7.4f", p.flash)) s  beep \(String(format: "%7.4f", p.beep)) s  "
                    + "beep-flash \(ms(p.rawMs)) ms  minus ffplay's A-V \(ms(p.offsetMs)) ms (+-8.3)")
            }
            if !pairs.isEmpty {
                let raw = pairs.map(\.rawMs)
                lines.append("  in the recording: median \(ms(AVSync.median(raw))) ms, worst \(ms(raw.max { abs($0) < abs($1) }!)) ms; "
                    + "ffplay's A-V removed: median \(ms(medianMs)) ms, worst |.| \(String(format: "%.1f", worstMs)) ms "
                    + "(allowed \(Int(AVSync.worstAllowedMs)))")
            }
            lines.append("  record: " + recordSummary.replacingOccurrences(of: "\n", with: "\n  record: "))
            return lines.joined(separator: "\n")
        }
    }

    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
