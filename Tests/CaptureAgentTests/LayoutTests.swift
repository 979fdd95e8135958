import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Monitor layouts: RandR monitors become display:1, display:2, ...; odd sizes record.
final class LayoutTests: XCTestCase {
    func testTwoMonitorsBecomeTwoDisplayChannelsWithTheirSizes() throws {
        let rig = try TestRig.start(RigOptions(
            monitors: [RigMonitor(width: 1920, height: 1080), RigMonitor(width: 1280, height: 1024)],
            audio: false, motion: true)) // motion on monitor 1 only: monitor 2 stays still
        defer { rig.stop() }
        let env = Agent.environment(rig)

        let listing = try Agent.run(["channels", "--json"], env: env)
        XCTAssertEqual(listing.status, 0, listing.stderr)
        struct Listing: Decodable { var channels: [ChannelInfo] }
        let ids = try JSONCoding.decoder.decode(Listing.self, from: Data(listing.stdout.utf8)).channels.map { try ChannelID(parsing: $0.id) }
        XCTAssertTrue(ids.contains(.display(1)) && ids.contains(.display(2)), "\(ids)")
        XCTAssertFalse(ids.contains(.display(3)))

        let out = Agent.temporaryDirectory("two-monitors")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try Agent.run(["record", "--out", out, "--duration", "3s", "--fps", "10",
                                    "--channel", "display:1", "--channel", "display:2"], env: env)
        XCTAssertEqual(result.status, 0, result.stderr)
        for (dir, width, height) in [("display-1", 1920, 1080), ("display-2", 1280, 1024)] {
            let channel = try RecordedChannel(out + "/" + dir)
            let all = try channel.concatenated(into: out + "/\(dir).ts")
            XCTAssertEqual(try Media.decodeErrors(all), "", dir)
            let probe = try Media.probe(all)
            XCTAssertEqual(probe.width, width, dir)
            XCTAssertEqual(probe.height, height, dir)
            // Both channels span the whole recording on the shared timeline.
            let packets = try Media.packetTimestamps(all)
            XCTAssertEqual(packets.last!.pts + 0.1 - packets.first!.pts, 3.0, accuracy: 0.15, dir)
            if dir == "display-1" {
                XCTAssertEqual(Double(probe.frameCount), 30, accuracy: 1, "the moving monitor gets every frame")
            } else {
                // The still monitor: after a couple of repeats, unchanged frames are left out, but every
                // chunk keeps a keyframe at its start and a frame in its last slot.
                XCTAssertLessThan(probe.frameCount, 15, "a still screen does not cost every frame")
                for chunk in channel.chunks where !chunk.isFinal {
                    XCTAssertGreaterThanOrEqual(chunk.frames, 2, "chunk \(chunk.seq) has its first and last slot")
                    XCTAssertEqual(Double(chunk.durationNs) / 1e9, 1.0, accuracy: 0.1, "chunk \(chunk.seq) spans 1 s")
                }
            }
        }
    }

    func testOddSizedScreenRecords() throws {
        let rig = try TestRig.start(RigOptions(monitors: [RigMonitor(width: 1366, height: 767)], audio: false, motion: true))
        defer { rig.stop() }
        let out = Agent.temporaryDirectory("odd")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try Agent.run(["record", "--out", out, "--duration", "3s", "--channel", "display:1"],
                                   env: Agent.environment(rig))
        XCTAssertEqual(result.status, 0, result.stderr)
        let channel = try RecordedChannel(out + "/display-1")
        let all = try channel.concatenated(into: out + "/all.ts")
        XCTAssertEqual(try Media.decodeErrors(all), "")
        let probe = try Media.probe(all)
        XCTAssertEqual(probe.codecName, "h264")
        XCTAssertEqual(probe.width, 1366)
        XCTAssertTrue(probe.height == 766 || probe.height == 768, "4:2:0 needs an even height: \(probe.height)")
        XCTAssertEqual(Double(probe.frameCount), 90, accuracy: 2)
    }

    func testMaxHeightDownscales() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("scaled")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let result = try Agent.run(["record", "--out", out, "--duration", "2s", "--channel", "display:1", "--max-height", "720"],
                                   env: Agent.environment(rig))
        XCTAssertEqual(result.status, 0, result.stderr)
        let all = try RecordedChannel(out + "/display-1").concatenated(into: out + "/all.ts")
        let probe = try Media.probe(all)
        XCTAssertEqual(probe.width, 1280)
        XCTAssertEqual(probe.height, 720)
    }
}
