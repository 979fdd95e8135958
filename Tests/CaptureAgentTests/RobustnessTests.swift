import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// What happens when things go wrong or defaults are used: a slow encoder, a
/// crash, no --out.
final class RobustnessTests: XCTestCase {
    /// An encoder that cannot keep up (x264 veryslow at 1080p30 on two cores):
    /// video lowers its frame rate at the capture edge and says so, latency stays
    /// bounded (it stops on time), and not one audio sample is lost.
    func testSlowEncoderDropsVideoAtTheEdgeButNeverAudio() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("slow-encoder")
        defer { try? FileManager.default.removeItem(atPath: out) }
        // Every encode takes 100 ms more (a test-only delay): the encoder manages 10 of the
        // 30 frames a second, on any machine.
        let started = Date()
        let result = try Agent.run(
            ["record", "--out", out, "--duration", "4s", "--fps", "30", "--json",
             "--channel", "display:1", "--channel", "system_audio:default"],
            env: Agent.environment(rig, ["CAPTURE_AGENT_TEST_ENCODE_DELAY_MS": "100"]))
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(result.status, 0, result.stderr)
        // The start (rig connections, the audio's settling) takes about a second; a backlog of
        // the 80 frames the encoder could not take would add 8 s.
        XCTAssertLessThan(elapsed, 7, "latency stays bounded: no backlog of frames to encode after the end")

        let summary = try RecordingSummary(json: result.stdout)
        let video = try XCTUnwrap(summary.channel(.display(1)))
        let dropped = video.dropped
        let encoded = video.encoded
        // 10 a second get through (plus the few the queue between grabber and encoder holds).
        XCTAssertEqual(encoded, 40, accuracy: 8, "the encoder's pace: \(video)")
        XCTAssertEqual(dropped + encoded + video.leftOut, 120,
                       "every frame slot is accounted for, dropped ones counted: \(video)")

        let videoAll = try RecordedChannel(out + "/display-1").concatenated(into: out + "/v.ts")
        XCTAssertEqual(try Media.decodeErrors(videoAll), "")
        let audio = try RecordedChannel(out + "/system_audio-default")
        let audioAll = try audio.concatenated(into: out + "/a.ts")
        XCTAssertEqual(try Media.decodeErrors(audioAll), "")
        XCTAssertEqual(try Media.probe(audioAll).duration, 4.0, accuracy: 0.05, "all the audio is there")
        XCTAssertEqual(try Media.dominantFrequency(audioAll, seconds: 3), 1000, accuracy: 5)
        let audioStats = try XCTUnwrap(summary.channel(.systemAudio(nil)))
        // At most what the server had not delivered at the stop (AudioEdgeTests' bound on PulseAudio).
        XCTAssertLessThanOrEqual(audioStats.silenceFilledMs, 20, "no hole was papered over: \(audioStats)")
        XCTAssertEqual(audioStats.lostSamples, 0, "no audio lost to the slow video encoder: \(audioStats)")
    }

    /// The agent frozen (SIGSTOP) for 3 s across the end of a 3 s recording: the slots it
    /// missed before the end are counted as dropped, the ones after it are not (the session
    /// never had them): encoded + dropped + left out is the session's 90 slots. They used to
    /// be counted whole, the stall's slots past the end too.
    func testAStallAcrossTheEndCountsOnlyTheSessionsSlots() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("stall-end")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Agent.binary)
        process.arguments = ["record", "--out", out, "--duration", "3s", "--fps", "30", "--json", "--channel", "display:1"]
        process.environment = Agent.environment(rig)
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGCONT); process.terminate() } }
        // The session starts once the agent has connected (under a second here): frozen at
        // 2.5 s after the launch it is inside the recording, and it stays frozen past its end.
        usleep(2_500_000)
        kill(process.processIdentifier, SIGSTOP)
        usleep(3_000_000)
        kill(process.processIdentifier, SIGCONT)
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let video = try XCTUnwrap(try RecordingSummary(json: String(decoding: output, as: UTF8.self)).channel(.display(1)))
        XCTAssertGreaterThan(video.dropped, 0, "the stall inside the session is counted: \(video)")
        XCTAssertEqual(video.encoded + video.dropped + video.leftOut, 90, "the session's slots, no more: \(video)")
        XCTAssertEqual(try Media.probe(try RecordedChannel(out + "/display-1").concatenated(into: out + "/v.ts")).frameCount,
                       video.encoded)
    }

    /// SIGKILL mid-recording: every chunk whose metadata exists is complete
    /// (size and checksum match, it decodes); nothing half-written poses as done.
    func testChunksSurviveACrash() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("crash")
        defer { try? FileManager.default.removeItem(atPath: out) }
        // Killed inside a write: chunk 3's bytes are on disk under the temporary name, the
        // rename has not happened (a test-only pause holds the writer there and says so).
        let process = try Agent.start(["record", "--out", out, "--chunk", "0.5s", "--channel", "display:1",
                                       "--channel", "mic:default"],
                                      env: Agent.environment(rig, ["CAPTURE_AGENT_TEST_PAUSE_BEFORE_RENAME": "chunk-000003.ts"]))
        let dirs = ["display-1", "mic-default"]
        let deadline = Date().addingTimeInterval(20)
        var pausedIn: String?
        while pausedIn == nil && Date() < deadline && process.isRunning {
            pausedIn = dirs.first { FileManager.default.fileExists(atPath: out + "/" + $0 + "/.chunk-000003.ts.paused") }
            if pausedIn == nil { usleep(10_000) }
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let paused = try XCTUnwrap(pausedIn, "the writer never reached chunk 3's rename")
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + paused + "/.chunk-000003.ts.tmp"),
                      "killed with chunk 3 written under its temporary name")
        for dir in dirs {
            let channel = try RecordedChannel(out + "/" + dir)
            XCTAssertGreaterThanOrEqual(channel.chunks.count, 3, dir)
            if dir == paused {
                XCTAssertEqual(channel.chunks.count, 3, "\(dir): the chunk killed in its write is not there, half or whole")
            }
            XCTAssertEqual(channel.chunks.map(\.seq), Array(0..<channel.chunks.count), "\(dir): no gaps")
            for chunk in channel.chunks {
                let data = try Data(contentsOf: URL(fileURLWithPath: chunk.media))
                XCTAssertEqual(chunk.bytes, data.count, "\(dir) chunk \(chunk.seq) complete")
                let sum = try runProcess("/usr/bin/sha256sum", [chunk.media], timeout: .seconds(10)).stdout.prefix(64)
                XCTAssertEqual(chunk.sha256, String(sum))
                XCTAssertEqual(try Media.decodeErrors(chunk.media), "", "\(dir) chunk \(chunk.seq) decodes")
            }
        }
    }

    /// Without --out a recording goes to the spool: $XDG_STATE_HOME/capture-agent/spool/<session>/.
    func testDefaultOutputIsTheSpool() throws {
        let rig = try TestRig.shared()
        let state = Agent.temporaryDirectory("xdg-state")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let result = try Agent.run(["record", "--duration", "1s", "--session-id", "cap-test-1", "--channel", "mic:default"],
                                   env: Agent.environment(rig, ["XDG_STATE_HOME": state]))
        XCTAssertEqual(result.status, 0, result.stderr)
        let dir = state + "/capture-agent/spool/cap-test-1"
        let channel = try RecordedChannel(dir + "/mic-default")
        XCTAssertGreaterThanOrEqual(channel.chunks.count, 1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/session.json"))
        var st = stat()
        XCTAssertEqual(stat(state + "/capture-agent/spool", &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o700, "the spool is private to its user")
        XCTAssertEqual(stat(channel.chunks[0].media, &st), 0)
        XCTAssertEqual(st.st_mode & 0o077, 0, "chunk files are not readable by others")
    }
}
