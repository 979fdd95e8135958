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
        let before = processes(in: binaries)
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
        XCTAssertEqual(processes(in: binaries).subtracting(before), [], "processes left running")
        XCTAssertTrue(r.stdout.contains("chunks left in the agent's spool: 0"), r.stdout.suffix(2000).description)
        let tmpAfter = Set(try FileManager.default.contentsOfDirectory(atPath: "/tmp").filter { $0.hasPrefix("capture-demo") })
        XCTAssertEqual(tmpAfter.subtracting(tmpBefore), [], "temporary directories (rig, socket, token) left in /tmp")
    }

    /// PIDs of running processes the demo may have started: those of the built binaries, of
    /// the copies it gives a private desktop's user (under /tmp/capture-demo…, perhaps deleted),
    /// and anything run as that desktop's user (the rig's compositor, PipeWire, portal).
    private func processes(in directory: String) -> Set<Int32> {
        let rigUID: uid_t? = getpwnam("capture-rig").map { $0.pointee.pw_uid }.flatMap { $0 == getuid() ? nil : $0 }
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return Set(pids.compactMap { pid -> Int32? in
            guard let n = Int32(pid) else { return nil }
            if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe"),
               exe.hasPrefix(directory + "/") || exe.hasPrefix("/tmp/capture-demo") {
                return n
            }
            if let rigUID, let owner = (try? FileManager.default.attributesOfItem(atPath: "/proc/\(pid)"))?[.ownerAccountID] as? NSNumber,
               owner.uint32Value == rigUID {
                return n
            }
            return nil
        })
    }
}
