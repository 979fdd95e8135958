import CaptureCore
import CaptureConcurrency
import CapturePipeline
import CaptureTestSupport
import Foundation
import Logging
import XCTest

/// The cheap, in-process half of "sessions leave nothing behind" (the daemon's 100-session test
/// is the other): once a stopped session is let go, every pipeline object it made is gone.
final class SessionLifetimeTests: XCTestCase {
    func testAStoppedSessionLetsGoOfEveryObjectItMade() throws {
        let rig = try TestRig.shared()
        rig.makeCurrent()
        let counters = RecordingSession.liveObjectCounters(displays: .x11)
        let before = counters.map(\.current)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("lifetime-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: out) }

        for round in 0..<2 {
            // In a closure of its own, so the session's last reference is gone when it returns.
            try { () throws in
                let options = RecordingOptions(
                    sessionId: "lifetime-\(round)", outputDirectory: out + "/\(round)",
                    channels: try ["display:1", "mic:default", "system_audio:default"].map { try ChannelID(parsing: $0) })
                let session = RecordingSession(options: options, logger: Logger(label: "lifetime-test"))
                try session.start()
                // While it runs, every counter sees its objects: the check below can fail.
                let during = counters.map(\.current)
                for (i, counter) in counters.enumerated() {
                    XCTAssertGreaterThan(during[i], before[i], "\(counter.name) does not count its instances")
                }
                usleep(1_000_000)
                let summary = session.stop()
                XCTAssertEqual(summary.channels.count, 3)
                XCTAssertTrue(summary.channels.allSatisfy { $0.chunks >= 1 }, "\(summary.channels)")
            }()
            // An audio stop from inside a callback frees its engine on a helper thread: allow a moment.
            let deadline = Date().addingTimeInterval(3)
            while counters.map(\.current) != before && Date() < deadline { usleep(10_000) }
            for (i, counter) in counters.enumerated() {
                XCTAssertEqual(counter.current, before[i], "round \(round): \(counter.current - before[i]) \(counter.name) outlived the session")
            }
        }
    }
}
