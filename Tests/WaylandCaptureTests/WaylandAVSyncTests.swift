import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Audio/video synchronisation on a Wayland desktop, measured as AVSyncTests does on X11 (the
/// method and its error budget are described there): ffplay, a native Wayland client, plays
/// the flash-and-beep file in a window into the desktop's PipeWire; `record` captures
/// display:1 through the ScreenCast portal and system audio through pipewire-pulse; every
/// flash and its beep must stay within the same 40 ms, the first second included.
///
/// The compositor places the player's window itself (Wayland clients cannot): the measured
/// region is found in the recording, as the middle of what is white in its brightest frame.
///
/// Here the instrument shares the two cores with what it measures: mutter paints in software
/// and the flash is on the screen only once mutter has painted it (its frame time is what
/// the agent stamps the frame with, as it should), and ffplay's A-V line on Wayland is its
/// own estimate. Measured with one core kept busy by another process: the agent placed every
/// frame at the compositor's time (no frame late), yet a flash painted 30-50 ms after its
/// beep came in one run of two or three. So a failing run is measured again, up to three
/// runs: a fault of the agent's (an offset, a drift, frames in the wrong slot) fails every
/// run; the desktop being starved once does not. The monitor is 800x480 to keep mutter's
/// painting and read-back small.
final class WaylandAVSyncTests: XCTestCase {
    static let width = 800
    static let height = 480
    /// Runs at most, until one passes.
    static let runs = 3

    func testFlashAndBeepStayTogetherOnWayland() throws {
        let ffplay = try AVSync.executable("ffplay")
        // 800x480: mutter paints in software here and reads every frame back for the
        // screencast; at 1920x1080 and 60 fps it alone takes more than one of the two cores.
        let rig = try WaylandRig.start(monitors: [RigMonitor(width: Self.width, height: Self.height)], audio: true, motion: false)
        defer { rig.stop() }
        try AVSync.muteRigTone { args in try rig.run(["pactl"] + args, env: ["LC_ALL": "C"], timeout: .seconds(10)) }
        let work = try rig.makeDirectory("avsync")
        let movie = work + "/flash-beep.mkv"
        try AVSync.makeMovie(movie, beepDelayMs: ProcessInfo.processInfo.environment["AVSYNC_TEST_BEEP_DELAY_MS"].flatMap { Int($0) } ?? 0)
        try rig.chownTree(work)

        // Consent first, once (a second's recording): the measured start then restores it.
        let state = try rig.makeDirectory("state")
        let warmup = try DesktopRecording(rig, state: state, out: work + "/warmup", seconds: 1)
        try rig.consent(.share(monitor: 1))
        XCTAssertEqual(warmup.finish().status, 0)
        // The pointer out of the picture's middle.
        try rig.rig("pointer", ["\(Self.width - 10),\(Self.height - 10)"])

        var attempt = 1
        while true {
            let run = try measure(rig: rig, ffplay: ffplay, movie: movie, state: state, dir: work + "/attempt-\(attempt)")
            print(run.report(attempt: attempt))
            if !run.passes && attempt < Self.runs {
                print("WaylandAVSyncTests: run \(attempt) failed (ffplay dropped \(run.playerDroppedFrames) frames); measuring again")
                attempt += 1
                continue
            }
            let details = "\n" + run.report(attempt: nil)
            XCTAssertGreaterThanOrEqual(run.pairs.count, AVSync.requiredFlashes, "flashes with a beep" + details)
            XCTAssertNotNil(run.playerAVMs, "ffplay printed no A-V status line" + details)
            XCTAssertLessThanOrEqual(run.worstMs, AVSync.worstAllowedMs, "worst |beep - flash| (ffplay's A-V removed)" + details)
            XCTAssertLessThan(try XCTUnwrap(run.pairs.first).flash, 1.5, "the first pair is in the recording's first seconds" + details)
            return
        }
    }

    private func measure(rig: WaylandRig, ffplay: String, movie: String, state: String, dir: String) throws -> AVSync.Run {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try rig.chownTree(dir)
        let playerLog = dir + "/ffplay.log"
        let player = try rig.spawn([ffplay, "-hide_banner", "-loglevel", "warning", "-stats", "-sync", "audio", "-autoexit",
                                    "-noborder", "-window_title", "avsync-player", movie],
                                   env: ["SDL_VIDEODRIVER": "wayland", "SDL_AUDIODRIVER": "pulseaudio"], log: playerLog)
        defer {
            if player.isRunning {
                player.terminate()
                player.waitUntilExit()
            }
        }
        let record = try rig.run([rig.binary("capture-agent"), "record", "--out", dir + "/rec", "--channel", "display:1",
                                  "--channel", "system_audio:default", "--duration", AVSync.recordDuration, "--fps", "\(AVSync.fps)"],
                                 env: ["XDG_STATE_HOME": state], timeout: .seconds(60))
        let deadline = Date().addingTimeInterval(5)
        while player.isRunning && Date() < deadline { usleep(20_000) }
        guard record.status == 0 else {
            throw CaptureError(.internalError, "record failed (status \(record.status)): \(record.stderr)")
        }
        let playerText = (try? String(contentsOfFile: playerLog, encoding: .utf8)) ?? ""
        let videoAll = try RecordedChannel(dir + "/rec/display-1").concatenated(into: dir + "/video.ts")
        let audioAll = try RecordedChannel(dir + "/rec/system_audio-default").concatenated(into: dir + "/audio.ts")
        let videoStart = try Media.packetTimestamps(videoAll, stream: "v:0").map(\.pts).min() ?? .nan
        let audioStart = try Media.packetTimestamps(audioAll, stream: "a:0").map(\.pts).min() ?? .nan
        let frames = try Media.frameLuma(videoAll, crop: try Self.flashingRegion(videoAll))
        let samples = try Media.decodeFloat(audioAll, channels: 1, sampleRate: 48_000, seconds: nil)
        let beeps = AVSync.beepOnsets(samples, start: audioStart)
        var beepHz = Double.nan
        if let first = beeps.sampleIndices.first, first + 2400 <= samples.count {
            beepHz = Media.dominantFrequency(samples: samples[first..<(first + 2400)], sampleRate: 48_000, from: 200, to: 5000)
        }
        let status = AVSync.ffplayStatus(playerText)
        return AVSync.Run(
            flashes: AVSync.flashOnsets(frames, start: videoStart, lead: 0.5 / Double(AVSync.fps)), beeps: beeps, beepHz: beepHz,
            playerAVMs: status.medianAVMs, playerAVRangeMs: status.rangeMs, playerDroppedFrames: status.droppedFrames,
            // With the compositor's side of it: how late its frames reached us.
            recordSummary: ([record.stdout.trimmingCharacters(in: .whitespacesAndNewlines)]
                            + record.stderr.split(separator: "\n").filter { $0.contains("screencast counters") }.map(String.init))
                .joined(separator: "\n"),
            playerTail: String(playerText.replacingOccurrences(of: "\r", with: "\n").suffix(600)))
    }

    /// The middle half of the white window in the brightest frame of `file`.
    static func flashingRegion(_ file: String) throws -> (x: Int, y: Int, width: Int, height: Int) {
        let (w, h) = (width, height)
        let whole = try Media.frameLuma(file, crop: (0, 0, w, h))
        let brightest = try XCTUnwrap(whole.indices.max { whole[$0].luma < whole[$1].luma })
        let frame = try Recording.frame(file, index: brightest, width: w, height: h)
        // Rows and columns with many white pixels: the window (the pointer's few do not count).
        var rows = [Int](repeating: 0, count: h), columns = [Int](repeating: 0, count: w)
        for y in 0..<h {
            for x in 0..<w {
                let p = (y * w + x) * 3
                if frame[p] > 220 && frame[p + 1] > 220 && frame[p + 2] > 220 {
                    rows[y] += 1
                    columns[x] += 1
                }
            }
        }
        let wideRows = rows.indices.filter { rows[$0] >= 100 }, tallColumns = columns.indices.filter { columns[$0] >= 100 }
        let box = (x0: tallColumns.first ?? 0, y0: wideRows.first ?? 0, x1: tallColumns.last ?? 0, y1: wideRows.last ?? 0)
        let width = box.x1 - box.x0, height = box.y1 - box.y0
        guard width >= 300, height >= 150 else {
            throw CaptureError(.internalError, "no flashing window in the recording (white box \(box))")
        }
        return (box.x0 + width / 4, box.y0 + height / 4, width / 2, height / 2)
    }
}
