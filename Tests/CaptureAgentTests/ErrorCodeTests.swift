import CaptureTestSupport
import Foundation
import XCTest

/// Every documented error code, triggered for real.
final class ErrorCodeTests: XCTestCase {
    private func assertFails(_ result: (status: Int32, stdout: String, stderr: String), code: String, status: Int32,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(result.status, status, "exit status; stderr: \(result.stderr)", file: file, line: line)
        XCTAssertTrue(result.stderr.contains(code), "stderr names \(code): \(result.stderr)", file: file, line: line)
    }

    func testNoXServerIsDisplayUnavailable() throws {
        let out = Agent.temporaryDirectory("no-x")
        defer { try? FileManager.default.removeItem(atPath: out) }
        // A display number nobody serves, and no socket for it.
        let env = Agent.environment(nil, ["DISPLAY": ":4711"])
        let result = try Agent.run(["record", "--out", out, "--duration", "1s", "--channel", "display:1"], env: env)
        assertFails(result, code: "DISPLAY_UNAVAILABLE", status: 69)
        let json = try Agent.run(["record", "--out", out, "--duration", "1s", "--channel", "display:1", "--json"], env: env)
        XCTAssertTrue(json.stdout.contains("\"code\":\"DISPLAY_UNAVAILABLE\""), json.stdout)
    }

    func testXServerGoingAwayMidRecordingIsDisplayUnavailableAndKeepsTheChunks() throws {
        let rig = try TestRig.start(RigOptions(audio: false, motion: true))
        defer { rig.stop() }
        let out = Agent.temporaryDirectory("x-gone")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Agent.binary)
        process.arguments = ["record", "--out", out, "--duration", "60s", "--channel", "display:1"]
        process.environment = Agent.environment(rig)
        let errPipe = Pipe()
        process.standardError = errPipe
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        Thread.sleep(forTimeInterval: 3)
        rig.stop() // kills Xvfb under the recorder
        let deadline = Date().addingTimeInterval(20)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(process.isRunning, "the recorder notices and stops")
        if process.isRunning { process.terminate(); return }
        let stderr = String(decoding: errPipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(process.terminationStatus, 69, stderr)
        XCTAssertTrue(stderr.contains("DISPLAY_UNAVAILABLE"), stderr)
        let channel = try RecordedChannel(out + "/display-1")
        XCTAssertGreaterThanOrEqual(channel.chunks.count, 2, "what was captured before is kept")
        let all = try channel.concatenated(into: out + "/all.ts")
        XCTAssertEqual(try Media.decodeErrors(all), "")
    }

    /// An encode that fails mid-recording (injected at the 75th frame, 2.5 s in: nothing a client
    /// sets can make x264 fail) ends the recording with ENCODER_ERROR and exit 70 at once, and
    /// keeps the whole chunks encoded before it, decodable, with the microphone's beside them.
    func testAnEncoderFailingMidRecordingIsEncoderErrorAndKeepsTheChunks() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("encoder-fault")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let started = ContinuousClock.now
        let result = try Agent.run(["record", "--out", out, "--duration", "30s", "--fps", "30", "--chunk", "1s",
                                    "--channel", "display:1", "--channel", "mic:default"],
                                   env: Agent.environment(rig, ["CAPTURE_AGENT_TEST_ENCODER_FAULT_AT_FRAME": "75"]))
        let elapsed = ContinuousClock.now - started
        assertFails(result, code: "ENCODER_ERROR", status: 70)
        XCTAssertTrue(result.stderr.contains("frame 75 could not be encoded"), result.stderr)
        XCTAssertLessThan(elapsed, .seconds(15), "the recording stopped at the failure, not at its 30 s")
        let video = try RecordedChannel(out + "/display-1")
        XCTAssertEqual(video.chunks.map(\.seq), Array(0..<video.chunks.count), "whole chunks, in order")
        XCTAssertGreaterThanOrEqual(video.chunks.count, 2, "the two whole seconds before the fault are kept")
        XCTAssertLessThanOrEqual(video.chunks.reduce(0) { $0 + $1.frames }, 74, "nothing from the failed frame on")
        let all = try video.concatenated(into: out + "/all.ts")
        XCTAssertEqual(try Media.decodeErrors(all), "")
        XCTAssertGreaterThanOrEqual(try RecordedChannel(out + "/mic-default").chunks.count, 2, "the microphone's chunks too")
    }

    func testNoAudioServerIsAudioUnavailable() throws {
        let out = Agent.temporaryDirectory("no-pulse")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let env = Agent.environment(nil, ["PULSE_SERVER": "unix:/nonexistent/capture-agent-test/native",
                                          "XDG_RUNTIME_DIR": "/nonexistent/capture-agent-test"])
        for channel in ["mic:default", "system_audio:default"] {
            let result = try Agent.run(["record", "--out", out, "--duration", "1s", "--channel", channel], env: env)
            assertFails(result, code: "AUDIO_UNAVAILABLE", status: 69)
        }
    }

    func testUnknownChannelsAreInvalidChannels() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("bad-channel")
        defer { try? FileManager.default.removeItem(atPath: out) }
        for channel in ["display:9", "mic:no-such-source", "system_audio:no-such-sink", "camera:1", "display:zero"] {
            let result = try Agent.run(["record", "--out", out, "--duration", "1s", "--channel", channel],
                                       env: Agent.environment(rig))
            assertFails(result, code: "INVALID_CHANNELS", status: 65)
        }
    }

    func testUnwritableOutputIsIOError() throws {
        let rig = try TestRig.shared()
        // A regular file where a directory must go.
        let file = Agent.temporaryDirectory("plain-file")
        FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        defer { try? FileManager.default.removeItem(atPath: file) }
        for out in [file + "/recording", "/proc/capture-agent-cannot-write-here"] {
            let result = try Agent.run(["record", "--out", out, "--duration", "1s", "--channel", "mic:default"],
                                       env: Agent.environment(rig))
            assertFails(result, code: "IO_ERROR", status: 74)
        }
    }

    func testBadArgumentsAreInvalidRequest() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("bad-args")
        defer { try? FileManager.default.removeItem(atPath: out) }
        for args in [["--fps", "0"], ["--fps", "61"], ["--chunk", "0.1s"], ["--chunk", "11s"], ["--duration", "soon"],
                     ["--preset", "warp"], ["--qp", "20", "--crf", "20"], ["--qp", "52"]] {
            let result = try Agent.run(["record", "--out", out, "--channel", "mic:default"] + args, env: Agent.environment(rig))
            assertFails(result, code: "INVALID_REQUEST", status: 64)
        }
    }
}
