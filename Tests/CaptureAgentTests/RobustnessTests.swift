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
        let started = Date()
        let result = try Agent.run(
            ["record", "--out", out, "--duration", "4s", "--preset", "veryslow", "--json",
             "--channel", "display:1", "--channel", "system_audio:default"], env: Agent.environment(rig))
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertLessThan(elapsed, 12, "latency stays bounded: no backlog of frames to encode after the end")

        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let channels = summary?["channels"] as? [[String: Any]] ?? []
        let video = try XCTUnwrap(channels.first { $0["channel"] as? String == "display:1" })
        let dropped = video["dropped"] as? Int ?? 0
        let encoded = video["encoded"] as? Int ?? 0
        XCTAssertGreaterThan(dropped, 0, "frames the encoder could not take are dropped at the capture edge and counted")
        XCTAssertEqual(dropped + encoded + (video["leftOut"] as? Int ?? 0), 120, accuracy: 2,
                       "every frame slot is accounted for")

        let videoAll = try RecordedChannel(out + "/display-1").concatenated(into: out + "/v.ts")
        XCTAssertEqual(try Media.decodeErrors(videoAll), "")
        let audio = try RecordedChannel(out + "/system_audio-default")
        let audioAll = try audio.concatenated(into: out + "/a.ts")
        XCTAssertEqual(try Media.decodeErrors(audioAll), "")
        XCTAssertEqual(try Media.probe(audioAll).duration, 4.0, accuracy: 0.05, "all the audio is there")
        XCTAssertEqual(try Media.dominantFrequency(audioAll, seconds: 3), 1000, accuracy: 5)
        let audioStats = try XCTUnwrap(channels.first { $0["channel"] as? String == "system_audio:default" })
        XCTAssertEqual(audioStats["silenceFilledMs"] as? Int ?? 99, 0, accuracy: 30, "no hole was papered over")
    }

    /// SIGKILL mid-recording: every chunk whose metadata exists is complete
    /// (size and checksum match, it decodes); nothing half-written poses as done.
    func testChunksSurviveACrash() throws {
        let rig = try TestRig.shared()
        let out = Agent.temporaryDirectory("crash")
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = try Agent.start(["record", "--out", out, "--chunk", "0.5s", "--channel", "display:1",
                                       "--channel", "mic:default"], env: Agent.environment(rig))
        Thread.sleep(forTimeInterval: 2.7)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        for dir in ["display-1", "mic-default"] {
            let channel = try RecordedChannel(out + "/" + dir)
            XCTAssertGreaterThanOrEqual(channel.chunks.count, 3, dir)
            XCTAssertEqual(channel.chunks.map(\.seq), Array(0..<channel.chunks.count), "\(dir): no gaps")
            for chunk in channel.chunks {
                let data = try Data(contentsOf: URL(fileURLWithPath: chunk.media))
                XCTAssertEqual(chunk.metadata["bytes"] as? Int, data.count, "\(dir) chunk \(chunk.seq) complete")
                let sum = try runProcess("/usr/bin/sha256sum", [chunk.media], timeout: .seconds(10)).stdout.prefix(64)
                XCTAssertEqual(chunk.metadata["sha256"] as? String, String(sum))
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
