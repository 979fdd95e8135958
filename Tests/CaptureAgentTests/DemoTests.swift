import CaptureTestSupport
import Foundation
import XCTest

/// The README's first command, `scripts/demo`, run as a user on a headless machine runs it
/// (no DISPLAY: it starts its own rig), with the built binaries instead of a release build;
/// and its `--desktop gnome-wayland` variant, which records a private headless GNOME through
/// the ScreenCast portal (the screen-sharing dialog answered by synthetic input).
final class DemoTests: XCTestCase {
    func testTheDemoRunsTheWholeFlowAndStopsWhatItStarted() throws {
        try runDemo([])
    }

    func testTheDemoOnAWaylandDesktopRunsTheWholeFlowAndStopsWhatItStarted() throws {
        try runDemo(["--desktop", "gnome-wayland"])
    }

    private func runDemo(_ extraArguments: [String]) throws {
        let out = Agent.temporaryDirectory("demo")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let binaries = URL(fileURLWithPath: BuiltProduct.path("capture-agent")).deletingLastPathComponent().path
        var env = ProcessInfo.processInfo.environment
        for key in ["DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "PULSE_SERVER", "XDG_RUNTIME_DIR",
                    "CAPTURE_AGENT_SOCKET", "XDG_STATE_HOME"] {
            env[key] = nil
        }
        // Everything the demo starts inherits this mark (or, run as a private desktop's user,
        // carries RIG_DESKTOP_OF=/tmp/capture-demo…), so processes of the other test lane,
        // started from the same binaries, are not taken for the demo's.
        let mark = "CAPTURE_DEMO_TEST_MARK=\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        env["CAPTURE_DEMO_TEST_MARK"] = String(mark.split(separator: "=")[1])
        let before = processes(marked: mark)
        let tmpBefore = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("capture-demo") })
        let r = try runProcess(Repo.script("demo"), ["--duration", "6", "--out", out, "--binary-dir", binaries] + extraArguments,
                               environment: env, timeout: .seconds(300))
        XCTAssertEqual(r.status, 0, "demo failed:\n\(r.stdout.suffix(3000))\n\(r.stderr.suffix(3000))")
        func line(_ prefix: String) -> String? {
            r.stdout.split(separator: "\n").first { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
        }

        // The export: one MP4 of the session, video and the audio tracks (mix, mic, system).
        let mp4 = try XCTUnwrap(line("exported MP4: "), r.stdout)
        XCTAssertTrue(mp4.hasPrefix(out + "/endpoint/exports/"), mp4)
        let probe = try Media.probe(mp4)
        XCTAssertEqual(probe.streams.map(\.codecType), ["video", "audio", "audio", "audio"])
        XCTAssertEqual(probe.first.codecName, "h264")
        XCTAssertEqual(probe.first.width, 1920)
        XCTAssertEqual(probe.first.height, 1080)
        XCTAssertEqual(probe.formatDuration, 6, accuracy: 2.5, "the demo records about --duration seconds")
        XCTAssertTrue(r.stdout.contains("format|duration="), "no ffprobe summary: \(r.stdout.suffix(2000))")

        // A still frame of the moving picture.
        let png = try XCTUnwrap(line("still frame: "))
        let still = try Media.probe(png)
        XCTAssertEqual(still.first.codecName, "png")
        XCTAssertEqual(still.first.width, 1920)
        XCTAssertEqual(still.first.height, 1080)

        // The live HLS playlist had segments while it recorded.
        let hls = try XCTUnwrap(line("live HLS: "))
        let segments = try XCTUnwrap(hls.range(of: #"\((\d+) segments while recording\)"#, options: .regularExpression))
        XCTAssertTrue(hls.hasPrefix("http://127.0.0.1:") && hls.contains("/index.m3u8"), hls)
        XCTAssertGreaterThan(Int(hls[segments].dropFirst().split(separator: " ")[0]) ?? 0, 0, hls)

        // The backend's webhooks, in order.
        XCTAssertEqual(line("webhooks: "), "capture_session.active, capture_session.stopped, capture_session.exported")

        // Nothing it started is left: no agent or endpoint of these binaries, no rig, no spool.
        XCTAssertEqual(processes(marked: mark).subtracting(before), [], "processes left running")
        XCTAssertTrue(r.stdout.contains("chunks left in the agent's spool: 0"), r.stdout.suffix(2000).description)
        let tmpAfter = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("capture-demo") })
        XCTAssertEqual(tmpAfter.subtracting(tmpBefore), [], "temporary directories (rig, socket, token) left in /tmp")
    }

    /// PIDs of running processes the demo started: those with `mark` in their environment
    /// (inherited from the demo), and those of a private desktop it made (its user's processes
    /// carry RIG_DESKTOP_OF or, run through `rig run`, RIG_STATE_DIR with the demo's rig
    /// directory, /tmp/capture-demo…).
    private func processes(marked mark: String) -> Set<Int32> {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return Set(pids.compactMap { pid -> Int32? in
            guard let n = Int32(pid), let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
            let variables = environ.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            let ours = variables.contains(mark) || variables.contains {
                $0.hasPrefix("RIG_DESKTOP_OF=/tmp/capture-demo") || $0.hasPrefix("RIG_STATE_DIR=/tmp/capture-demo")
            }
            return ours ? n : nil
        })
    }
}
