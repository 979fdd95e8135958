import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// The screen changes under a running session (a mode change, a monitor turned off and on, one
/// plugged in) on the Xorg dummy rig: the display channel follows its monitor, its chunks stay
/// one stream of one size on the frame grid, and only the X server going away would end it.
final class ScreenLayoutTests: XCTestCase {
    static let fps = 30

    private func startRig() throws -> TestRig {
        try TestRig.start(RigOptions(monitors: [RigMonitor(width: 1920, height: 1080), RigMonitor(width: 1280, height: 1024)],
                                     audio: false, motion: true))
    }

    private func xrandr(_ rig: TestRig, _ args: String...) throws {
        let r = try runProcess("xrandr", args, environment: rig.childEnvironment(), timeout: .seconds(20))
        XCTAssertEqual(r.status, 0, "xrandr \(args.joined(separator: " ")): \(r.stderr)")
    }

    /// Runs `record` of `channel` for `seconds`, doing `changes` (at their times, seconds after
    /// the recording started) meanwhile; returns the summary of the channel and its directory.
    private func record(_ rig: TestRig, channel: ChannelID, seconds: Int, name: String,
                        changes: [(at: Double, action: () throws -> Void)]) throws -> (summary: ChannelStatsSnapshot, dir: String, out: String) {
        let out = Agent.temporaryDirectory(name)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Agent.binary)
        process.arguments = ["record", "--out", out, "--duration", "\(seconds)s", "--channel", channel.description, "--json"]
        process.environment = Agent.environment(rig)
        let stdout = Pipe()
        process.standardOutput = stdout
        let log = out + ".log"
        FileManager.default.createFile(atPath: log, contents: nil)
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try process.run()
        // The session starts once session.json is there.
        let deadline = Date().addingTimeInterval(15)
        while !FileManager.default.fileExists(atPath: out + "/session.json") && Date() < deadline { usleep(10_000) }
        let started = Date()
        for change in changes {
            let wait = change.at - Date().timeIntervalSince(started)
            if wait > 0 { usleep(UInt32(wait * 1e6)) }
            try change.action()
        }
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let logText = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: log)   // its text goes into the failure message
        XCTAssertEqual(process.terminationStatus, 0, "record failed: \(logText)")
        let summary = try RecordingSummary(json: String(decoding: output, as: UTF8.self))
        let stats = try XCTUnwrap(summary.channel(channel), "no \(channel) in the summary: \(summary)")
        let dir = out + "/" + channel.directoryName
        return (stats, dir, out)
    }

    /// Every chunk decodes on its own at `width` x `height`, the concatenation decodes as one
    /// stream of that size, and every frame sits on the 1/30 s grid.
    private func assertOneStream(_ dir: String, width: Int, height: Int, seconds: Int) throws -> String {
        let channel = try RecordedChannel(dir)
        XCTAssertEqual(channel.chunks.count, seconds, "one chunk per second")
        for chunk in channel.chunks {
            XCTAssertEqual(try Media.decodeErrors(chunk.media), "", "chunk \(chunk.seq) decodes on its own")
            let p = try Media.probe(chunk.media)
            XCTAssertEqual(p.width, width, "chunk \(chunk.seq)")
            XCTAssertEqual(p.height, height, "chunk \(chunk.seq)")
        }
        let all = try channel.concatenated(into: dir + "-all.ts")
        XCTAssertEqual(try Media.decodeErrors(all), "")
        let probe = try Media.probe(all)
        XCTAssertEqual(probe.width, width)
        XCTAssertEqual(probe.height, height)
        let pts = try Media.packetTimestamps(all).map(\.pts)
        XCTAssertEqual(pts, pts.sorted(), "timestamps increase across chunks")
        let fps = Double(Self.fps)
        let offGrid = pts.filter { abs(($0 * fps).rounded() - $0 * fps) > 0.001 }
        XCTAssertEqual(offGrid.count, 0, "frames off the grid: \(offGrid.prefix(5))")
        return all
    }

    /// DUMMY0 goes from 1920x1080 to 1680x1050 3 s in and back at 6 s: the channel records on,
    /// at 1920x1080 throughout, the 1680x1050 picture scaled to 1728x1080 and pillarboxed
    /// (96 px of black on each side) meanwhile.
    func testAModeChangeIsFollowedAndScaledIntoTheStream() throws {
        let rig = try startRig()
        defer { rig.stop() }
        let (stats, dir, out) = try record(rig, channel: .display(1), seconds: 9, name: "mode-change", changes: [
            (3, { try self.xrandr(rig, "--output", "DUMMY0", "--mode", "1680x1050") }),
            (6, { try self.xrandr(rig, "--output", "DUMMY0", "--mode", "1920x1080") }),
        ])
        defer { try? FileManager.default.removeItem(atPath: out) }
        XCTAssertEqual(stats.layoutChanges, 2, "\(stats)")
        XCTAssertEqual(stats.offlineFrames, 0)
        let all = try assertOneStream(dir, width: 1920, height: 1080, seconds: 9)
        // Left edge: the moving pattern (top-left quarter) before and after, black pillar during.
        let edge = try Media.frameLuma(all, crop: (0, 100, 80, 300))
        let before = edge.filter { $0.pts > 0.5 && $0.pts < 2.5 }
        let during = edge.filter { $0.pts > 3.6 && $0.pts < 5.5 }
        let after = edge.filter { $0.pts > 6.6 && $0.pts < 8.5 }
        XCTAssertFalse(before.isEmpty || during.isEmpty || after.isEmpty, "\(edge.count) frames")
        XCTAssertTrue(before.allSatisfy { $0.luma > 40 }, "the pattern is at the left edge before the change")
        XCTAssertTrue(during.allSatisfy { $0.luma < 20 }, "no black pillar while scaled: \(during.filter { $0.luma >= 20 }.prefix(3))")
        XCTAssertTrue(after.allSatisfy { $0.luma > 40 }, "the pattern is back at the left edge")
        // Inside the pillarbox the pattern goes on moving (it is captured, not frozen).
        let inside = try Media.frameLuma(all, crop: (200, 100, 300, 300)).filter { $0.pts > 3.6 && $0.pts < 5.5 }
        XCTAssertGreaterThan(Set(inside.map { Int($0.luma) }).count, 3, "the picture is still live while scaled")
    }

    /// DUMMY1 (display:2) is turned off 2.5 s in and on again at 5 s: black frames meanwhile,
    /// counted (75 of them at 30 fps), then capture resumes; the daemon reports both changes.
    func testAMonitorTurnedOffAndOnRecordsBlackMeanwhile() throws {
        let rig = try startRig()
        defer { rig.stop() }
        // A grey root window: what DUMMY1 shows when it is on.
        let grey = try runProcess("xsetroot", ["-solid", "#808080"], environment: rig.childEnvironment(), timeout: .seconds(10))
        XCTAssertEqual(grey.status, 0, grey.stderr)
        let (stats, dir, out) = try record(rig, channel: .display(2), seconds: 8, name: "off-on", changes: [
            (2.5, { try self.xrandr(rig, "--output", "DUMMY1", "--off") }),
            (5, { try self.xrandr(rig, "--output", "DUMMY1", "--mode", "1280x1024", "--right-of", "DUMMY0") }),
        ])
        defer { try? FileManager.default.removeItem(atPath: out) }
        XCTAssertEqual(Double(stats.offlineFrames ?? 0), 75, accuracy: 12, "\(stats)")
        let all = try assertOneStream(dir, width: 1280, height: 1024, seconds: 8)
        // Grey while on, black only while off.
        let luma = try Media.frameLuma(all, crop: (100, 100, 400, 400))
        let on = luma.filter { ($0.pts > 0.3 && $0.pts < 2.3) || $0.pts > 5.6 }
        let off = luma.filter { $0.pts > 3.0 && $0.pts < 4.8 }
        XCTAssertFalse(on.isEmpty || off.isEmpty, "\(luma.count) frames")
        XCTAssertTrue(on.allSatisfy { $0.luma > 100 }, "the monitor's picture is missing while it is on: \(on.filter { $0.luma <= 100 }.prefix(3))")
        XCTAssertTrue(off.allSatisfy { $0.luma < 17 }, "not black while the monitor was off: \(off.prefix(3))")
    }

    /// A monitor plugged in mid-session (DUMMY1 off at the start, on 3 s in) changes nothing for
    /// display:1: no layout change, nothing off, the stream goes on.
    func testAMonitorPluggedInChangesNothingForTheOthers() throws {
        let rig = try startRig()
        defer { rig.stop() }
        try xrandr(rig, "--output", "DUMMY1", "--off")
        let (stats, dir, out) = try record(rig, channel: .display(1), seconds: 6, name: "added", changes: [
            (3, { try self.xrandr(rig, "--output", "DUMMY1", "--mode", "1280x1024", "--right-of", "DUMMY0") }),
        ])
        defer { try? FileManager.default.removeItem(atPath: out) }
        XCTAssertEqual(stats.layoutChanges, 0, "\(stats)")
        XCTAssertEqual(stats.offlineFrames, 0)
        XCTAssertLessThanOrEqual(stats.dropped, 3, "\(stats)")
        _ = try assertOneStream(dir, width: 1920, height: 1080, seconds: 6)
    }

    /// The daemon reports the changes as `display-changed` events and counts the black frames in
    /// its status.
    func testTheDaemonReportsDisplayChanges() throws {
        let rig = try startRig()
        defer { rig.stop() }
        let daemon = try DaemonClientHarness(rig: rig)
        defer { daemon.stop() }
        let client = daemon.client
        _ = try client.call("subscribeEvents")
        _ = try client.call("startRecording", params: ["sessionId": "layout-1", "channels": .array([.object(["channel_id": "display:2"])])],
                            timeout: .seconds(30))
        usleep(1_000_000)
        try xrandr(rig, "--output", "DUMMY1", "--off")
        let lost = try XCTUnwrap(try client.waitForEvent(.displayChanged, timeoutNs: 5_000_000_000))
        XCTAssertEqual(lost.displayChanged?.state, .lost)
        XCTAssertEqual(lost.channelID, .display(2))
        XCTAssertEqual(lost.displayChanged?.monitor.name, "DUMMY1")
        usleep(1_000_000)
        let status = try client.call(.getStatus, as: StatusResult.self)
        XCTAssertGreaterThan(status.channels.first?.offlineFrames ?? 0, 15, "\(status)")
        XCTAssertEqual(status.state, .active, "a monitor turned off does not end the session")
        try xrandr(rig, "--output", "DUMMY1", "--mode", "1280x1024", "--right-of", "DUMMY0")
        let restored = try XCTUnwrap(try client.waitForEvent(.displayChanged, timeoutNs: 5_000_000_000))
        XCTAssertEqual(restored.displayChanged?.state, .restored)
        XCTAssertEqual(restored.displayChanged?.picture.width, 1280)
        let stopped = try client.call(.stopRecording, as: StopRecordingResult.self, timeout: .seconds(30))
        XCTAssertEqual(stopped.state, .stopped)
    }
}
