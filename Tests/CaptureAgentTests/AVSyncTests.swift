import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Audio/video synchronisation of `record`, end to end: ffplay plays a file that flashes its
/// window white and beeps at the same instants, `record` captures display:1 + system_audio at the
/// same time, and the flash and beep onsets found in the recording must stay together.
///
/// What is measured, and how precisely:
/// - Flash: the first frame (by PTS) whose mean luma over the middle of the player's window is
///   above the midpoint of dark and bright. A frame's PTS is its grab slot (n/60 s at 60 fps,
///   grab latency well under 1 ms), and the flash appeared on screen somewhere between the
///   previous grab and this one, so it is placed half a slot (8.3 ms) before the frame's PTS:
///   uncertain by +-8.3 ms per flash. The flashes come every 1.02 s = 61.2 slots, so each
///   lands 0.2 slot later in the capture's grid than the previous one: over 10 flashes the
///   rounding error is spread over the whole slot instead of being one random constant for
///   the run (with flashes on whole seconds every flash has the same phase).
/// - Beep: the first sample at which the RMS over the last 1 ms (one period of the 1 kHz beep)
///   rises above 30% of the loudest beep; AAC smears an onset by well under 1 ms. Measured on
///   the generated file itself (checked below) the detectors agree to 0.2 ms.
/// - The player's own error: ffplay syncs video to its audio clock but corrects a difference
///   only once it exceeds 40 ms (AV_SYNC_THRESHOLD_MIN), so how far apart it actually presents
///   flash and beep is set by how its start-up went: its medians ranged from -33 to +4 ms over
///   17 runs on the development rig, which alone would use up most of a 40 ms budget (raw
///   worst 36 ms in one run). It prints that difference ("A-V:" in its status line, audio clock
///   minus video clock), so it is subtracted: the offset charged to the recording is
///   (beep - flash in the recording) + (ffplay's median A-V). What is left (ffplay's own
///   mis-estimate of its audio latency, its display latency, and the recording's error)
///   measured a median of -5.4 to -13.4 ms over 11 runs on the 2-core development rig (beep
///   early) and a worst single flash of 8-19 ms; 31-34 ms only with another rig and daemon
///   soak running beside it (load 3.5-4) while ffplay dropped 13-50 frames.
/// - A failing run in which ffplay itself reports dropped frames is measured once more (the
///   player, not the recording, was starved); normally the test takes about 17 s.
///
/// Set AVSYNC_TEST_BEEP_DELAY_MS=60 (or -60) to move the file's beeps 60 ms off their flashes:
/// the test must then fail (measured: median +44 / -71 ms, worst 57-64 / 89 ms).
final class AVSyncTests: XCTestCase {
    func testFlashAndBeepStayTogether() throws {
        let ffplay = try AVSync.executable("ffplay")
        let work = Agent.temporaryDirectory("avsync")
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        // 1. The file, and a check that in the file itself the onsets coincide (this also
        //    checks the detectors: a frame's PTS is its display time there, so no half slot).
        let delayMs = ProcessInfo.processInfo.environment["AVSYNC_TEST_BEEP_DELAY_MS"].flatMap { Int($0) } ?? 0
        let movie = work + "/flash-beep.mkv"
        try AVSync.makeMovie(movie, beepDelayMs: delayMs)
        let fileFlashes = AVSync.flashOnsets(
            try Media.frameLuma(movie, crop: (x: 0, y: 0, width: AVSync.playerWidth, height: AVSync.playerHeight)),
            start: 0, lead: 0)
        let fileBeeps = AVSync.beepOnsets(try Media.decodeFloat(movie, channels: 1, sampleRate: 48_000, seconds: nil),
                                          start: 0)
        XCTAssertEqual(fileFlashes.onsets.count, AVSync.flashCount, "flashes in the generated file: \(fileFlashes.onsets)")
        XCTAssertEqual(fileBeeps.onsets.count, AVSync.flashCount, "beeps in the generated file: \(fileBeeps.onsets)")
        for (k, flash) in fileFlashes.onsets.enumerated() {
            let expected = AVSync.firstFlash + Double(k) * AVSync.flashSpacing
            XCTAssertEqual(flash, expected, accuracy: 0.0005, "file flash \(k)")
            if k < fileBeeps.onsets.count {
                XCTAssertEqual((fileBeeps.onsets[k] - flash) * 1000, Double(delayMs), accuracy: 1,
                               "file beep \(k) starts with its flash")
            }
        }

        // 2. A private rig (nothing else plays into "spk": its 1 kHz tone is muted).
        let rig = try TestRig.start(RigOptions(audio: true, motion: false))
        defer { rig.stop() }
        try AVSync.muteRigTone(rig)

        // 3. Play and record; once more if ffplay itself admits it was disturbed (dropped
        //    frames) and the run failed: a busy 2-core machine, not the recording.
        var attempt = 1
        while true {
            let run = try measure(rig: rig, ffplay: ffplay, movie: movie, dir: work + "/attempt-\(attempt)")
            print(run.report(attempt: attempt))
            if !run.passes && attempt == 1 && run.playerDroppedFrames > 0 {
                print("AVSyncTests: ffplay dropped \(run.playerDroppedFrames) frames in a failing run; measuring once more")
                attempt += 1
                continue
            }
            assertPasses(run)
            return
        }
    }

    private func assertPasses(_ run: AVSync.Run) {
        let details = "\n" + run.report(attempt: nil)
        XCTAssertGreaterThanOrEqual(run.flashes.onsets.count, AVSync.requiredFlashes, "flashes found in the recording" + details)
        XCTAssertGreaterThanOrEqual(run.beeps.onsets.count, AVSync.requiredFlashes, "beeps found in the recording" + details)
        XCTAssertGreaterThanOrEqual(run.pairs.count, AVSync.requiredFlashes,
                                    "flashes with a beep within \(Int(AVSync.pairWindow * 1000)) ms" + details)
        XCTAssertNotNil(run.playerAVMs, "ffplay printed no A-V status line (its stderr is in the report)" + details)
        guard run.pairs.count >= AVSync.requiredFlashes, run.playerAVMs != nil else { return }
        XCTAssertLessThanOrEqual(run.worstMs, AVSync.worstAllowedMs,
                                 "worst |beep - flash| of the recording (ffplay's own A-V removed)" + details)
    }

    private func measure(rig: TestRig, ffplay: String, movie: String, dir: String) throws -> AVSync.Run {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = dir + "/rec"
        let playerLog = dir + "/ffplay.log"
        _ = FileManager.default.createFile(atPath: playerLog, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: playerLog))
        defer { try? logHandle.close() }

        // ffplay first: the first flash is 1 s into the file, so the recording (started right
        // after) is running well before it.
        let player = Process()
        player.executableURL = URL(fileURLWithPath: ffplay)
        player.arguments = [
            "-hide_banner", "-loglevel", "warning", "-stats", "-sync", "audio", "-autoexit", "-noborder",
            "-left", "0", "-top", "0", "-x", "\(AVSync.playerWidth)", "-y", "\(AVSync.playerHeight)",
            "-window_title", "avsync-player", movie,
        ]
        // SDL: audio through libpulse to the rig's default sink "spk" (Debian 12's SDL 2.26 knows
        // "pulseaudio", "pipewire", "alsa", "disk", "dummy"; left to itself it tries PipeWire's
        // own protocol first, which is not the rig's pulse socket), video on the rig's X server,
        // and a session bus address that refuses (with none, libdbus autolaunches a bus that
        // outlives the test).
        player.environment = rig.childEnvironment([
            "SDL_AUDIODRIVER": "pulseaudio", "SDL_VIDEODRIVER": "x11", "WAYLAND_DISPLAY": nil,
            "DBUS_SESSION_BUS_ADDRESS": "unix:path=\(dir)/no-bus",
        ])
        player.standardInput = FileHandle.nullDevice
        player.standardOutput = FileHandle.nullDevice
        player.standardError = logHandle
        try player.run()
        defer {
            if player.isRunning {
                player.terminate()
                player.waitUntilExit()
            }
        }

        let record = try Agent.run(
            ["record", "--out", out, "--channel", "display:1", "--channel", "system_audio:default",
             "--duration", AVSync.recordDuration, "--fps", "\(AVSync.fps)"],
            env: Agent.environment(rig), timeout: .seconds(60))
        let deadline = Date().addingTimeInterval(5)
        while player.isRunning && Date() < deadline { usleep(20_000) }
        let playerText = (try? String(contentsOfFile: playerLog, encoding: .utf8)) ?? ""
        guard record.status == 0 else {
            throw CaptureError(.internalError, "record failed (status \(record.status)): \(record.stderr)")
        }

        let videoAll = try RecordedChannel(out + "/display-1").concatenated(into: dir + "/video.ts")
        let audioAll = try RecordedChannel(out + "/system_audio-default").concatenated(into: dir + "/audio.ts")
        // ffmpeg reports times from the file's start; put them back on the session timeline.
        let videoStart = try Media.packetTimestamps(videoAll, stream: "v:0").map(\.pts).min() ?? .nan
        let audioStart = try Media.packetTimestamps(audioAll, stream: "a:0").map(\.pts).min() ?? .nan
        let frames = try Media.frameLuma(videoAll, crop: AVSync.recordedCrop)
        let samples = try Media.decodeFloat(audioAll, channels: 1, sampleRate: 48_000, seconds: nil)

        let flashes = AVSync.flashOnsets(frames, start: videoStart, lead: 0.5 / Double(AVSync.fps))
        let beeps = AVSync.beepOnsets(samples, start: audioStart)
        let status = AVSync.ffplayStatus(playerText)
        var beepHz = Double.nan
        if let first = beeps.sampleIndices.first, first + 2400 <= samples.count {
            beepHz = Media.dominantFrequency(samples: samples[first..<(first + 2400)], sampleRate: 48_000, from: 200, to: 5000)
        }
        return AVSync.Run(
            flashes: flashes, beeps: beeps, beepHz: beepHz,
            playerAVMs: status.medianAVMs, playerAVRangeMs: status.rangeMs, playerDroppedFrames: status.droppedFrames,
            recordSummary: record.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
            playerTail: String(playerText.replacingOccurrences(of: "\r", with: "\n").suffix(600)))
    }
}

/// The stimulus, the detectors and the bookkeeping of AVSyncTests.
private enum AVSync {
    // The file: 640x360 at 50 fps, black; flash k (k = 0..11) is 5 white frames (100 ms) from
    // frame 50 + 51k, i.e. t = 1 + 1.02k s; beep k is 100 ms of 1 kHz at -6 dBFS from the same
    // instant (sample 48000 + 48960k, starting at phase 0); silence otherwise. mpeg4 (intra
    // every second) + PCM in Matroska: cheap to decode, no audio codec delay.
    static let playerWidth = 640
    static let playerHeight = 360
    static let movieFps = 50
    static let movieSeconds = 12.8
    static let firstFlash = 1.0
    static let flashSpacing = 1.02
    static let flashCount = 12
    static let flashFrames = 5
    static let beepSamples = 4800

    // The recording.
    static let fps = 60
    static let recordDuration = "13s"
    /// The middle of the player's window (it maps at 0,0 with no window manager).
    static let recordedCrop = (x: 160, y: 90, width: 320, height: 180)

    // The verdict.
    static let requiredFlashes = 10
    static let worstAllowedMs = 40.0
    /// A flash and a beep further apart than this are not a pair.
    static let pairWindow = 0.3

    static func makeMovie(_ path: String, beepDelayMs: Int) throws {
        let spacingFrames = Int((flashSpacing * Double(movieFps)).rounded())            // 51
        let firstFrame = Int((firstFlash * Double(movieFps)).rounded())                  // 50
        let spacingSamples = Int((flashSpacing * 48_000).rounded())                      // 48960
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
    static func muteRigTone(_ rig: TestRig) throws {
        let env = rig.childEnvironment(["DISPLAY": nil, "LC_ALL": "C"])
        let list = try runProcess("pactl", ["list", "sink-inputs"], environment: env, timeout: .seconds(10))
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
            let r = try runProcess("pactl", ["set-sink-input-mute", id, "1"], environment: env, timeout: .seconds(10))
            guard r.status == 0 else { throw CaptureError(.internalError, "pactl set-sink-input-mute \(id) 1 failed: \(r.stderr)") }
        }
    }

    static func executable(_ name: String) throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        throw CaptureError(.ioError, "\(name) not found in PATH (\(path)); run scripts/install-deps.sh")
    }

    // MARK: detectors

    struct Flashes {
        /// Estimated appearance times on the session timeline (s).
        var onsets: [Double]
        var dark: Double
        var bright: Double
    }

    /// Rising edges of the luma through the midpoint of its range, at least 0.5 s apart, each
    /// placed `lead` seconds before its frame's timestamp (+ `start`, the file's first timestamp:
    /// ffmpeg counts from there). A recording that starts inside a flash does not count it.
    static func flashOnsets(_ frames: [(pts: Double, luma: Double)], start: Double, lead: Double) -> Flashes {
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

    struct Beeps {
        /// Onset times on the session timeline (s).
        var onsets: [Double]
        var sampleIndices: [Int]
        /// RMS (1 ms windows) of the loudest beep and the median (the silence between beeps).
        var peak: Double
        var floor: Double
    }

    static let rmsWindow = 48   // 1 ms at 48 kHz: one period of the beep, so the RMS has no ripple

    /// The samples (48 kHz mono) where the RMS of the last 1 ms rises above 30% of its maximum,
    /// at least 0.5 s apart. Nothing when the loudest 1 ms is below -30 dBFS or the silence
    /// between beeps is not at least 20 dB below it (then something else plays into the sink).
    static func beepOnsets(_ samples: [Float], start: Double) -> Beeps {
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

    /// ffplay's status lines ("  12.76 A-V: -0.023 fd=   0 aq= ..." separated by CR): the median
    /// A-V (ms) once the file is 1 s in, its range, and the frames it dropped (fd, the last value).
    static func ffplayStatus(_ text: String) -> (medianAVMs: Double?, rangeMs: (Double, Double)?, droppedFrames: Int) {
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

    struct Pair {
        var flash: Double
        var beep: Double
        /// beep - flash in the recording (ms).
        var rawMs: Double
        /// rawMs + ffplay's A-V: what the recording adds (ms).
        var offsetMs: Double
    }

    struct Run {
        var flashes: Flashes
        var beeps: Beeps
        var beepHz: Double
        var playerAVMs: Double?
        var playerAVRangeMs: (Double, Double)?
        var playerDroppedFrames: Int
        var recordSummary: String
        var playerTail: String

        var pairs: [Pair] {
            flashes.onsets.compactMap { flash in
                guard let beep = beeps.onsets.min(by: { abs($0 - flash) < abs($1 - flash) }),
                      abs(beep - flash) <= AVSync.pairWindow else { return nil }
                let raw = (beep - flash) * 1000
                return Pair(flash: flash, beep: beep, rawMs: raw, offsetMs: raw + (playerAVMs ?? 0))
            }
        }

        var medianMs: Double { AVSync.median(pairs.map(\.offsetMs)) }
        var worstMs: Double { pairs.map { abs($0.offsetMs) }.max() ?? .infinity }

        var passes: Bool {
            pairs.count >= AVSync.requiredFlashes && playerAVMs != nil && worstMs <= AVSync.worstAllowedMs
        }

        func report(attempt: Int?) -> String {
            func ms(_ v: Double) -> String { String(format: "%+.1f", v) }
            var lines: [String] = []
            let pairs = self.pairs
            lines.append("AVSyncTests\(attempt.map { " attempt \($0)" } ?? ""): \(flashes.onsets.count) flashes "
                + "(luma \(Int(flashes.dark))..\(Int(flashes.bright))), \(beeps.onsets.count) beeps "
                + "(1 ms RMS peak \(String(format: "%.3f", beeps.peak)), silence \(String(format: "%.4f", beeps.floor)), "
                + "\(String(format: "%.0f", beepHz)) Hz), \(pairs.count) pairs")
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

    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
