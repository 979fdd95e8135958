import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// `record`'s encoder and source options change what is recorded, measured in the output:
/// `--crf`, `--video-bitrate`, `--audio-bitrate`, `--no-cursor`, `--display`.
final class RecordOptionsTests: XCTestCase {
    /// Records 3 s of the given channels with `options`; returns the directory (removed by the caller).
    @discardableResult
    private func record(_ rig: TestRig, _ name: String, channels: [String], _ options: [String],
                        env: [String: String?] = [:], seconds: Int = 3) throws -> String {
        try recordWithSummary(rig, name, channels: channels, options, env: env, seconds: seconds).out
    }

    /// `record` as above, with `--json`: the directory and the summary.
    private func recordWithSummary(_ rig: TestRig, _ name: String, channels: [String], _ options: [String],
                                   env: [String: String?] = [:], seconds: Int = 3) throws -> (out: String, summary: RecordingSummary) {
        let out = Agent.temporaryDirectory(name)
        let r = try Agent.run(["record", "--out", out, "--duration", "\(seconds)s", "--json"]
                              + channels.flatMap { ["--channel", $0] } + options,
                              env: Agent.environment(rig, env))
        XCTAssertEqual(r.status, 0, r.stderr)
        return (out, try RecordingSummary(json: r.stdout))
    }

    private func bytes(_ dir: String) throws -> Int {
        try RecordedChannel(dir).chunks.reduce(0) { $0 + ((try? Data(contentsOf: URL(fileURLWithPath: $1.media)).count) ?? 0) }
    }

    /// Quality and rate settings on ffplay's moving test picture (and the 440 Hz microphone).
    /// Its own rig: the shared rig's pattern of flat colours is cheap to draw, and too easy to
    /// compress for the quality setting to scale the stream threefold.
    func testQualityAndBitrateOptionsChangeTheStreams() throws {
        let rig = try TestRig.start(RigOptions(motionSource: .testsrc2))
        defer { rig.stop() }
        var dirs: [String] = []
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        /// The stream's bytes, and the screen grabs in it (the frames with a picture of their own).
        func video(_ name: String, _ options: [String]) throws -> (bytes: Int, grabbed: Int) {
            let (out, summary) = try recordWithSummary(rig, name, channels: ["display:1"], options)
            dirs.append(out)
            let grabbed = try XCTUnwrap(summary.channel(.display(1)), "\(summary)").captured
            return (try bytes(out + "/display-1"), max(grabbed, 1))
        }
        // Constant quality: a higher CRF is a smaller stream, per picture: on a loaded machine
        // the capture grabs fewer of testsrc2's pictures (the rest are dropped; counted), and
        // a stream with 50 grabs is smaller than one with 90 at any CRF (measured: crf 18 at
        // 812 kB against crf 40 at 310 kB when the former was the one starved). Per grab crf 40
        // measured 4.9 times smaller alone, 4.6 beside three busy loops and 3.6 in a CI lane
        // (44 and 34 grabs of 90); a CRF that did nothing would give 1.
        let fine = try video("crf-18", ["--crf", "18"])
        let coarse = try video("crf-40", ["--crf", "40"])
        print("crf 18: \(fine.bytes) bytes, \(fine.grabbed) grabs; crf 40: \(coarse.bytes) bytes, \(coarse.grabbed) grabs")
        XCTAssertLessThan(coarse.bytes * 5 / 2 / coarse.grabbed, fine.bytes / fine.grabbed,
                          "crf 40 (\(coarse.bytes) bytes, \(coarse.grabbed) grabs) is far smaller per picture than crf 18 (\(fine.bytes) bytes, \(fine.grabbed) grabs)")
        // A bitrate target: the stream is about that size (3 s x 400 kbit/s = 150 kB), and a
        // tenfold target gives a much larger one.
        let low = try video("vbr-400k", ["--video-bitrate", "400k"]).bytes
        let high = try video("vbr-4m", ["--video-bitrate", "4M"]).bytes
        XCTAssertEqual(Double(low), 150_000, accuracy: 75_000, "400 kbit/s for 3 s")
        XCTAssertGreaterThan(high, low * 4, "4 Mbit/s (\(high) bytes) against 400 kbit/s (\(low) bytes)")

        func audioBitrate(_ name: String, _ rate: String) throws -> Double {
            let out = try record(rig, name, channels: ["mic:default"], ["--audio-bitrate", rate])
            dirs.append(out)
            let all = try RecordedChannel(out + "/mic-default").concatenated(into: out + "/mic.ts")
            XCTAssertEqual(try Media.dominantFrequency(all, seconds: 2), 440, accuracy: 5)
            // The AAC packets themselves (MPEG-TS framing would add 70 kbit/s at any rate).
            let sizes = try runProcess("ffprobe", ["-v", "error", "-select_streams", "a:0", "-show_entries", "packet=size",
                                                   "-of", "csv=p=0", all], timeout: .seconds(60))
            XCTAssertEqual(sizes.status, 0, sizes.stderr)
            let payload = sizes.stdout.split(separator: "\n")
                .compactMap { Int($0.split(separator: ",").first.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") }
                .reduce(0, +)
            XCTAssertGreaterThan(payload, 0, "ffprobe's packet sizes: \(sizes.stdout.prefix(200))")
            return Double(payload) * 8 / 3
        }
        let a64 = try audioBitrate("aac-64k", "64k")
        let a192 = try audioBitrate("aac-192k", "192k")
        XCTAssertEqual(a64, 64_000, accuracy: 64_000 * 0.2, "64 kbit/s AAC")
        XCTAssertEqual(a192, 192_000, accuracy: 192_000 * 0.2, "192 kbit/s AAC")
    }

    /// The pointer (parked by the rig away from the moving picture, on black) is drawn into the
    /// picture, and not with `--no-cursor`.
    func testNoCursorLeavesThePointerOut() throws {
        let rig = try TestRig.shared()
        let pointer = try XCTUnwrap(rig.pointer, "the shared rig parks a pointer")
        let crop = (x: pointer.x - 4, y: pointer.y - 4, width: 24, height: 24)
        func meanLuma(_ options: [String]) throws -> Double {
            let out = try record(rig, "cursor-\(options.isEmpty ? "on" : "off")", channels: ["display:1"], options, seconds: 2)
            defer { try? FileManager.default.removeItem(atPath: out) }
            let all = try RecordedChannel(out + "/display-1").concatenated(into: out + "/v.ts")
            let frames = try Media.frameLuma(all, crop: crop)
            XCTAssertFalse(frames.isEmpty)
            return frames.map(\.luma).reduce(0, +) / Double(max(frames.count, 1))
        }
        let drawn = try meanLuma([])
        let left = try meanLuma(["--no-cursor"])
        XCTAssertEqual(left, 16, accuracy: 2, "black where the pointer is, with --no-cursor")
        XCTAssertGreaterThan(drawn, left + 10, "the pointer is drawn without --no-cursor (mean luma \(drawn) against \(left))")
    }

    /// `--display` picks the X server, whatever DISPLAY says: a second rig's 1280x720 screen.
    func testDisplayOptionPicksTheXServer() throws {
        let rig = try TestRig.shared()
        let other = try TestRig.start(RigOptions(monitors: [RigMonitor(width: 1280, height: 720)], audio: false, motion: false))
        defer { other.stop() }
        let out = try record(rig, "display-option", channels: ["display:1"], ["--display", other.display], seconds: 1)
        defer { try? FileManager.default.removeItem(atPath: out) }
        let probe = try Media.probe(out + "/display-1/chunk-000000.ts")
        XCTAssertEqual(probe.width, 1280, "the other display, not DISPLAY=\(rig.display)")
        XCTAssertEqual(probe.height, 720)
    }
}
