import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Without MIT-SHM (an X server that cannot map this process's memory, as with a remote
/// display or another IPC namespace) the agent still records the screen, through XGetImage,
/// and says so. Run for real: `capture-agent record` in an IPC namespace of its own
/// (`unshare --ipc`), so its shared-memory segments do not exist for the rig's X server and
/// XShmAttach fails there.
final class SharedMemoryFallbackTests: XCTestCase {
    private func record(_ rig: TestRig, isolated: Bool) throws
        -> (stderr: String, summary: String, video: Media.ProbeResult, luma: [Double])
    {
        let motion = try XCTUnwrap(rig.motionRect, "the shared rig has a moving picture")
        let out = Agent.temporaryDirectory(isolated ? "no-shm" : "shm")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let agent = ["record", "--out", out, "--duration", "3s", "--fps", "30", "--channel", "display:1"]
        // An IPC namespace needs CAP_SYS_ADMIN; without root, a user namespace brings it.
        let unshare = getuid() == 0 ? ["--ipc"] : ["--user", "--map-root-user", "--ipc"]
        let r = isolated
            ? try runProcess("unshare", unshare + ["--", Agent.binary] + agent,
                             environment: Agent.environment(rig, ["CAPTURE_AGENT_LOG_LEVEL": "warning"]),
                             timeout: .seconds(120))
            : try Agent.run(agent, env: Agent.environment(rig, ["CAPTURE_AGENT_LOG_LEVEL": "warning"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        let all = try RecordedChannel(out + "/display-1").concatenated(into: out + "/v.ts")
        let luma = try Media.frameLuma(all, crop: (x: Int(motion.x), y: Int(motion.y),
                                                   width: Int(motion.width), height: Int(motion.height)))
        let summary = r.stdout.split(separator: "\n").first { $0.contains("display:1:") }.map(String.init) ?? r.stdout
        return (r.stderr, summary, try Media.probe(all), luma.map(\.luma))
    }

    func testWithoutSharedMemoryTheScreenIsRecordedThroughXGetImage() throws {
        let rig = try TestRig.shared()
        let fallback = try record(rig, isolated: true)
        XCTAssertTrue(fallback.stderr.contains("XShmAttach failed"),
                      "the agent says it could not use MIT-SHM: \(String(fallback.stderr.suffix(2000)))")
        XCTAssertTrue(fallback.stderr.contains("falling back to XGetImage"), String(fallback.stderr.suffix(2000)))
        // The whole screen for 3 s at 30 fps, decodable. XGetImage copies each grab through the
        // socket, so on a loaded machine the capture falls behind and lowers the frame rate at
        // the edge: those frames are counted as dropped, and encoded + dropped is every frame
        // of the 3 s (how many are dropped depends on the machine, so it is only reported).
        XCTAssertEqual(fallback.video.codecName, "h264")
        XCTAssertEqual(fallback.video.width, 1920)
        XCTAssertEqual(fallback.video.height, 1080)
        try Self.assertEveryFrameAccounted(fallback.summary, fallback.video)
        // The moving picture was grabbed again and again as it moved (a frozen capture grabs
        // once: the rest would be repeats), and what was grabbed is the picture: testsrc2's colours, not black.
        let grabbed = try XCTUnwrap(Self.count("grabbed", in: fallback.summary), fallback.summary)
        // (In CI lanes on a slow machine: 14, 19, 30 and 50 grabs in the 3 s. The bound is
        // what a frozen capture cannot reach, not a frame rate.)
        XCTAssertGreaterThan(grabbed, 5, "frames grabbed in 3 s of a picture moving at 30 fps: \(fallback.summary)")
        let meanLuma = fallback.luma.reduce(0, +) / Double(max(fallback.luma.count, 1))
        XCTAssertGreaterThan(meanLuma, 40, "the moving region's mean luma (black is 16)")
        print("without MIT-SHM: \(fallback.summary)")

        // The control: in this process's own namespace MIT-SHM works and nothing is said.
        let shared = try record(rig, isolated: false)
        XCTAssertFalse(shared.stderr.contains("MIT-SHM"), String(shared.stderr.suffix(2000)))
        try Self.assertEveryFrameAccounted(shared.summary, shared.video)
    }

    /// The stream holds the frames the summary says were encoded, and encoded + dropped + left
    /// out is every frame slot of the 3 s at 30 fps (a loaded machine drops at the edge).
    private static func assertEveryFrameAccounted(_ summary: String, _ video: Media.ProbeResult,
                                                  file: StaticString = #filePath, line: UInt = #line) throws {
        let encoded = try XCTUnwrap(count("frames encoded", in: summary, before: true), summary, file: file, line: line)
        let dropped = try XCTUnwrap(count("dropped", in: summary), summary, file: file, line: line)
        let leftOut = try XCTUnwrap(count("left out", in: summary), summary, file: file, line: line)
        XCTAssertEqual(video.frameCount, encoded, summary, file: file, line: line)
        XCTAssertEqual(encoded + dropped + leftOut, 90, accuracy: 2, summary, file: file, line: line)
    }

    /// "grabbed 87" (or with `before`, "87 frames encoded") in the record summary's display line.
    private static func count(_ name: String, in line: String, before: Bool = false) -> Int? {
        if before {
            guard let range = line.range(of: " " + name) else { return nil }
            return Int(String(line[..<range.lowerBound].reversed().prefix { $0.isNumber }.reversed()))
        }
        guard let range = line.range(of: name + " ") else { return nil }
        return Int(line[range.upperBound...].prefix { $0.isNumber })
    }
}
