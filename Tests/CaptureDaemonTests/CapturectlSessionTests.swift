import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// A whole session driven only through `capturectl`, against the real daemon
/// capturing the rig; the media checked with ffprobe.
final class CapturectlSessionTests: XCTestCase {
    func testFullSessionThroughCapturectl() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "ctl-session")
        var env = daemon.environment
        env["CAPTURE_AGENT_SOCKET"] = daemon.socketPath
        func ctl(_ args: String...) throws -> (status: Int32, stdout: String, stderr: String) {
            try Capturectl.run(Array(args), env: env, timeout: .seconds(60))
        }
        let token = "ctl-token-\(UInt64.random(in: 1...UInt64.max))"
        let tokenFile = daemon.root + "/token"
        try (token + "\n").write(toFile: tokenFile, atomically: true, encoding: .utf8)
        chmod(tokenFile, 0o600)

        // Follow events in the background for the whole session.
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: Capturectl.binary)
        follower.arguments = ["events", "--follow", "--json"]
        follower.environment = env
        let followed = Pipe()
        follower.standardOutput = followed
        follower.standardError = FileHandle.nullDevice
        try follower.run()
        usleep(300_000)

        let channels = try ctl("channels", "--json")
        XCTAssertEqual(channels.status, 0, channels.stderr)
        let ids = try Capturectl.decode(channels.stdout, as: ChannelsResult.self).channels.map(\.channelId)
        XCTAssertTrue(ids.contains("display:1") && ids.contains("mic:default") && ids.contains("system_audio:default"), "\(ids)")

        let start = try ctl("start", "--session", "ctl-1", "--token-file", tokenFile, "--channel", "display:1",
                            "--channel", "mic:default", "--primary", "display:1", "--json")
        XCTAssertEqual(start.status, 0, start.stderr)
        let started = try Capturectl.decode(start.stdout, as: StartRecordingResult.self)
        XCTAssertEqual(started.state, .active)
        XCTAssertEqual(started.channels.filter(\.isPrimary).map(\.channelId), ["display:1"])
        XCTAssertEqual(try ctl("start", "--session", "ctl-2").status, CaptureErrorCode.invalidState.exitStatus)
        usleep(1_500_000)
        XCTAssertEqual(try ctl("pause", "--track", "mic").status, 0)
        XCTAssertEqual(try Capturectl.decode(try ctl("status", "--json").stdout, as: StatusResult.self).pausedTracks, [.mic])
        usleep(700_000)
        XCTAssertEqual(try ctl("resume").status, 0)
        usleep(1_000_000)
        let status = try ctl("status")
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("ctl-1") && status.stdout.contains("display:1"), status.stdout)
        let stop = try ctl("stop", "--json")
        XCTAssertEqual(stop.status, 0, stop.stderr)
        let perChannel = try Capturectl.decode(stop.stdout, as: StopRecordingResult.self).summary.channels
        XCTAssertEqual(perChannel.count, 2)
        for c in perChannel { XCTAssertGreaterThanOrEqual(c.chunks, 3, "\(c)") }
        XCTAssertEqual(try ctl("stop").status, CaptureErrorCode.invalidState.exitStatus)

        usleep(300_000)
        kill(follower.processIdentifier, SIGINT)
        follower.waitUntilExit()
        XCTAssertEqual(follower.terminationStatus, 0)
        let lines = String(decoding: followed.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
        let followedEvents = try lines.map { try Capturectl.decode($0, as: ControlEvent.self) }
        let names = followedEvents.map(\.name)
        for expected: ControlEventName in [.recordingStarted, .recordingPaused, .recordingResumed, .recordingStopped, .recordingComplete] {
            XCTAssertTrue(names.contains(expected), "\(expected.rawValue) missing from the followed events: \(names)")
        }
        XCTAssertLessThan(names.firstIndex(of: .recordingStarted) ?? 99, names.firstIndex(of: .recordingStopped) ?? -1)
        XCTAssertEqual(followedEvents.compactMap(\.recordingPaused).map(\.tracks), [[.mic]])
        XCTAssertEqual(followedEvents.compactMap(\.recordingComplete).map(\.deliveredTo), [.spool])

        // The media: H.264 1920x1080 and AAC, decodable.
        let dir = daemon.sessionDirectory("ctl-1")
        let video = try SessionTests.concatenate(dir, "display-1")
        let probe = try Media.probe(video)
        XCTAssertEqual(probe.codecName, "h264")
        XCTAssertEqual(probe.width, 1920)
        XCTAssertEqual(probe.height, 1080)
        XCTAssertEqual(try Media.decodeErrors(video), "")
        let audio = try SessionTests.concatenate(dir, "mic-default")
        XCTAssertEqual(try Media.probe(audio).codecName, "aac")
        XCTAssertEqual(try Media.dominantFrequency(audio, seconds: 1.0), 440, accuracy: 5)

        XCTAssertEqual(daemon.terminate(), 0)
        XCTAssertFalse(daemon.log.contains(token), "the token is in the daemon's log")
    }

    /// init, requestPermission (granted with the rig, denied with the reason
    /// without it), getChannels.
    func testInitPermissionsAndChannels() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "perms")
        let client = try daemon.client()
        let info = try client.ok(.initialize, ["apiUrl": "http://127.0.0.1:8787"], as: DaemonInfo.self)
        XCTAssertEqual(info.protocol, 1)
        XCTAssertEqual(info.version, CaptureAgentVersion.string)
        for permission in ["screen-capture", "microphone", "system-audio", "screen_capture"] {
            XCTAssertEqual(try client.ok(.requestPermission, ["permission": .string(permission)], as: PermissionResult.self).status, "granted",
                           permission)
        }
        XCTAssertEqual(client.failure("requestPermission", ["permission": "camera"])?.code, .invalidRequest)
        let listed = try client.ok(.getChannels, as: ChannelsResult.self)
        let ids = listed.channels.compactMap { try? ChannelID(parsing: $0.channelId) }
        XCTAssertTrue(ids.contains(.display(1)) && ids.contains(.microphone(nil)) && ids.contains(.systemAudio(nil)), "\(ids)")
        XCTAssertEqual(listed.problems, [])
        XCTAssertEqual(daemon.terminate(), 0)

        let bare = try DaemonProcess(rig: nil, name: "noperms", env: ["PULSE_SERVER": "unix:/nonexistent/pulse"])
        let c = try bare.client()
        let denied = try c.ok(.requestPermission, ["permission": "screen-capture"], as: PermissionResult.self)
        XCTAssertEqual(denied.status, "denied")
        XCTAssertEqual(denied.code, CaptureErrorCode.displayUnavailable.rawValue)
        XCTAssertTrue(denied.reason?.contains("DISPLAY") ?? false, "\(denied)")
        XCTAssertEqual(try c.ok(.requestPermission, ["permission": "microphone"], as: PermissionResult.self).status, "denied")
        XCTAssertEqual(bare.terminate(), 0)
    }

    /// `capturectl token` hands the daemon a token from a file (success: what it prints, and
    /// status says a token is present), and `capturectl status --watch` prints one line a
    /// second while not on a terminal, until Ctrl-C (SIGINT: exit 0), each the session as it
    /// stands: its elapsed time grows.
    func testTokenAndStatusWatch() throws {
        let rig = try TestRig.shared()
        let daemon = try DaemonProcess(rig: rig, name: "ctl-token-watch")
        defer { _ = daemon.terminate() }
        var env = daemon.environment
        env["CAPTURE_AGENT_SOCKET"] = daemon.socketPath
        let tokenFile = daemon.root + "/token"
        FileManager.default.createFile(atPath: tokenFile, contents: Data("cct_from_a_file\n".utf8), attributes: [.posixPermissions: 0o600])
        _ = try daemon.client().ok("startRecording", ["sessionId": "ctl-watch", "channels": .array([.object(["channel_id": "display:1"])])])

        let token = try Capturectl.run(["token", "--file", tokenFile, "--expires-at", "4102444800"], env: env)
        XCTAssertEqual(token.status, 0, token.stderr)
        XCTAssertEqual(token.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "token accepted (expires 2100-01-01T00:00:00.000Z)")
        XCTAssertFalse(token.stdout.contains("cct_from_a_file") || token.stderr.contains("cct_from_a_file"))
        XCTAssertEqual(try daemon.client().ok(.getStatus, as: StatusResult.self).tokenPresent, true)

        let watch = Process()
        watch.executableURL = URL(fileURLWithPath: Capturectl.binary)
        watch.arguments = ["status", "--watch"]
        watch.environment = env
        let out = Pipe()
        watch.standardOutput = out
        watch.standardError = FileHandle.nullDevice
        try watch.run()
        Thread.sleep(forTimeInterval: 3.5)
        kill(watch.processIdentifier, SIGINT)
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        watch.waitUntilExit()
        XCTAssertEqual(watch.terminationReason, .exit, "Ctrl-C ends it cleanly")
        XCTAssertEqual(watch.terminationStatus, 0)
        let lines = text.split(separator: "\n")
        XCTAssertGreaterThanOrEqual(lines.count, 3, "one line a second: \(text)")
        XCTAssertLessThanOrEqual(lines.count, 5, "one line a second: \(text)")
        var elapsed: [String] = []
        for line in lines {
            XCTAssertTrue(line.contains(" state=active session=ctl-watch elapsed="), String(line))
            XCTAssertTrue(line.contains(" display:1:fps="), String(line))
            elapsed.append(String(line.split(separator: " ").first { $0.hasPrefix("elapsed=") } ?? ""))
        }
        XCTAssertEqual(Set(elapsed).count, elapsed.count, "the elapsed time moves from line to line: \(elapsed)")
        _ = try daemon.client().ok("stopRecording")
    }
}
