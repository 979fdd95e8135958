import CaptureTestSupport
import Foundation
import XCTest

/// scripts/demo ends by summarising what it recorded (scripts/spool-summary): every channel,
/// under `set -euo pipefail`, and a clean exit. (It once printed the first channel only and died
/// of SIGPIPE in `ffprobe | head -n 1` on an audio channel.)
final class DemoSummaryTests: XCTestCase {
    func testTheSummaryListsEveryChannelAndExitsZero() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("summary")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try Agent.run(["record", "--out", out, "--duration", "2s"], env: Agent.environment(rig))
        XCTAssertEqual(r.status, 0, r.stderr)
        let summary = try runProcess("bash", ["-euo", "pipefail", Repo.script("spool-summary"), out], timeout: .seconds(60))
        XCTAssertEqual(summary.status, 0, summary.stderr)
        let lines = summary.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 3, summary.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  display-1: 2 chunks (h264,1920,1080)") }, summary.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  mic-default: 2 chunks (aac,48000)") }, summary.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("  system_audio-default: 2 chunks (aac,48000)") }, summary.stdout)

        // A channel without chunks is an error, not a silent gap in the summary.
        try FileManager.default.createDirectory(atPath: out + "/mic-broken", withIntermediateDirectories: true)
        let broken = try runProcess("bash", ["-euo", "pipefail", Repo.script("spool-summary"), out], timeout: .seconds(60))
        XCTAssertEqual(broken.status, 1)
        XCTAssertTrue(broken.stdout.contains("mic-broken: no chunks"), broken.stdout)
        XCTAssertTrue(broken.stdout.contains("system_audio-default: 2 chunks"), "the others are still listed: \(broken.stdout)")
    }
}
