import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The screen of a Wayland desktop (headless GNOME: mutter with no X server, PipeWire, the
/// GNOME ScreenCast portal) recorded by the real agent, as its user, with the consent dialog
/// answered by synthetic input the way a person would.
///
/// One desktop serves the whole class; each test has an agent state directory of its own, so
/// what consent it holds is its own (the portal's permission store is the desktop's).
final class WaylandScreenTests: XCTestCase {
    nonisolated(unsafe) static var desktop: WaylandRig?

    override class func setUp() {
        super.setUp()
        desktop = try? WaylandRig.start()
    }

    override class func tearDown() {
        desktop?.stop()
        desktop = nil
        super.tearDown()
    }

    private func rig() throws -> WaylandRig {
        guard let rig = Self.desktop else {
            // Start once more, to report why.
            Self.desktop = try WaylandRig.start()
            return Self.desktop!
        }
        return rig
    }

    /// `capture-agent record` in the desktop, in the background.
    private func record(_ rig: WaylandRig, state: String, out: String, seconds: Int, channels: [String] = ["display:1"],
                        extra: [String] = []) throws -> (process: Process, log: String) {
        let log = state + "/../record-\(UInt32.random(in: 0...UInt32.max)).log"
        var args = [rig.binary("capture-agent"), "record", "--out", out, "--duration", "\(seconds)s", "--log-level", "debug"]
        for channel in channels { args += ["--channel", channel] }
        let process = try rig.spawn(args + extra, env: ["XDG_STATE_HOME": state], log: log)
        return (process, log)
    }

    private func finish(_ recording: (process: Process, log: String), timeout: Double = 120) -> (status: Int32, log: String) {
        let deadline = Date().addingTimeInterval(timeout)
        while recording.process.isRunning && Date() < deadline { usleep(50_000) }
        if recording.process.isRunning { recording.process.terminate(); recording.process.waitUntilExit() }
        return (recording.process.terminationStatus, (try? String(contentsOfFile: recording.log, encoding: .utf8)) ?? "")
    }

    /// Declined in the dialog: PERMISSION_DENIED and nothing recorded; asked again and shared:
    /// 10 s of the screen, the mic and system audio, every chunk at the monitor's size, the
    /// moving window in the picture, frames on the grid, the pointer where it is; the consent
    /// kept in a private file.
    func testDeclinedThenSharedRecordsTheScreenWithSound() throws {
        let rig = try rig()
        let state = try rig.makeDirectory("state")
        let denied = try rig.makeDirectory("denied")
        let first = try record(rig, state: state, out: denied + "/rec", seconds: 10)
        try rig.consent(.cancel)
        let refused = finish(first)
        XCTAssertEqual(refused.status, CaptureErrorCode.permissionDenied.exitStatus, refused.log)
        XCTAssertTrue(refused.log.contains("PERMISSION_DENIED"), refused.log)
        let left = (FileManager.default.enumerator(atPath: denied)?.allObjects as? [String] ?? []).filter { $0.hasSuffix(".ts") }
        XCTAssertEqual(left, [], "a declined start records nothing")

        let out = try rig.makeDirectory("shared")
        let second = try record(rig, state: state, out: out + "/rec", seconds: 10,
                                channels: ["display:1", "mic:default", "system_audio:default"])
        try rig.consent(.share(monitor: 1))
        // Answering the dialog moved the pointer: put it back where the frame is checked.
        let pointer = try XCTUnwrap(rig.pointer)
        try rig.rig("pointer", ["\(pointer.x),\(pointer.y)"])
        let recorded = finish(second)
        XCTAssertEqual(recorded.status, 0, recorded.log)

        let chunks = try Recording.videoChunks(out + "/rec/display-1")
        XCTAssertEqual(chunks.count, 10, "one chunk a second")
        for chunk in chunks {
            XCTAssertEqual(chunk.width, 1920, chunk.path)
            XCTAssertEqual(chunk.height, 1080, chunk.path)
        }
        let video = try Recording.concatenate(out + "/rec/display-1", into: out + "/video.ts")
        XCTAssertEqual(try Recording.offGridPackets(video, fps: 30), [], "every frame on the 1/30 s grid")
        let motion = try XCTUnwrap(rig.motionRect)
        XCTAssertGreaterThanOrEqual(try Recording.distinctFrames(video, crop: motion), 100,
                                    "the moving window (native Wayland) changes in the picture")
        let still = PixelRect(x: 1920 - 400, y: 1080 - 300, width: 320, height: 200)
        XCTAssertEqual(try Recording.distinctFrames(video, crop: still), 1, "the still desktop stays still")

        // The pointer, drawn from the stream's cursor metadata: dark and light pixels at its
        // tip, where the desktop behind it is a smooth blue.
        let frame = try Recording.frame(video, index: 150, width: 1920, height: 1080)
        func lumas(_ rect: PixelRect) -> [Int] {
            var out: [Int] = []
            for y in Int(rect.y)..<Int(rect.maxY) {
                for x in Int(rect.x)..<Int(rect.maxX) {
                    let p = (y * 1920 + x) * 3
                    out.append((Int(frame[p]) * 29 + Int(frame[p + 1]) * 150 + Int(frame[p + 2]) * 77) >> 8)
                }
            }
            return out
        }
        let atPointer = lumas(PixelRect(x: pointer.x, y: pointer.y, width: 12, height: 18))
        let beside = lumas(PixelRect(x: pointer.x + 60, y: pointer.y, width: 12, height: 18))
        XCTAssertGreaterThan(atPointer.max()! - atPointer.min()!, 120, "the pointer is drawn at \(pointer)")
        XCTAssertLessThan(beside.max()! - beside.min()!, 30, "and nowhere else")

        for (dir, hz) in [("mic-default", 440.0), ("system_audio-default", 1000.0)] {
            let audio = try Recording.concatenate(out + "/rec/" + dir, into: out + "/\(dir).ts")
            XCTAssertEqual(try Media.dominantFrequency(audio, seconds: 9), hz, accuracy: 2, dir)
        }

        // The consent is kept for next time, in a file only the user reads.
        let tokens = state + "/capture-agent/screencast-tokens.json"
        var info = stat()
        XCTAssertEqual(stat(tokens, &info), 0, "the restore token is kept")
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        XCTAssertTrue(try String(contentsOfFile: tokens, encoding: .utf8).contains(rig.monitorNames.first ?? "?"))
    }
}
