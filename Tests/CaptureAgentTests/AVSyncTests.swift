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
///   uncertain by +-8.3 ms per flash. The flashes come every 0.78 s = 46.8 slots, so each
///   lands 0.2 slot earlier in the capture's grid than the previous one: over 10 flashes the
///   rounding error is spread over the whole slot instead of being one random constant for
///   the run (with flashes on whole seconds every flash has the same phase).
/// - The first second: the recording starts while the file plays, at a random point of its
///   flash cycle once ffplay's clock is 2 s in (its own start-up is over), so its first
///   flash comes 0-0.78 s after the recording's zero, and each run tries another instant of
///   the start-up. Every flash must have its beep within 0.39 s (the nearest one: a late beep
///   is a failing pair, not a flash left out), the first included, and that first pair must
///   lie in the recording's first second.
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
///   player, not the recording, was starved); normally the test takes about 20 s.
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
        XCTAssertEqual(run.unpairedFlashes, 0, "every flash has its beep" + details)
        XCTAssertLessThan(run.pairs.first?.flash ?? .infinity, 1.0, "a pair in the recording's first second" + details)
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

        // ffplay first; the recording starts once ffplay is 2 s into the file (its start-up,
        // when its own A-V is unsteady, is over) and at a random point of the flash cycle.
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

        let startAt = 2.0 + Double.random(in: 0..<AVSync.flashSpacing)
        let playing = Date().addingTimeInterval(15)
        while (AVSync.playerClock((try? String(contentsOfFile: playerLog, encoding: .utf8)) ?? "") ?? 0) < startAt {
            guard player.isRunning, Date() < playing else {
                throw CaptureError(.internalError, "ffplay did not reach \(startAt) s into the file: "
                    + ((try? String(contentsOfFile: playerLog, encoding: .utf8)) ?? ""))
            }
            usleep(5_000)
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
