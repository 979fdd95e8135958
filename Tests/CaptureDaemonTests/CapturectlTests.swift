import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Runs the `capturectl` binary built next to the test bundle.
enum Capturectl {
    static var binary: String { builtProduct("capturectl") }

    static func builtProduct(_ name: String) -> String { BuiltProduct.path(name) }

    /// This process's environment with the control socket pointed at `socket`.
    static func environment(socket: String, _ overrides: [String: String?] = [:]) -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["CAPTURE_AGENT_SOCKET"] = socket
        for (k, v) in overrides { env[k] = v }
        return env
    }

    static func run(_ args: [String], env: [String: String], timeout: Duration = .seconds(30)) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        try runProcess(binary, args, environment: env, timeout: timeout)
    }

    /// `--json` output read as the protocol's struct (what the daemon answered, or an event a line).
    static func decode<T: Decodable>(_ text: some StringProtocol, as type: T.Type) throws -> T {
        try JSONCoding.decoder.decode(T.self, from: Data(text.utf8))
    }

    /// What `--json` prints on stdout when a command fails: `{"error":{"code","message"}}`.
    struct ErrorOutput: Decodable {
        struct Detail: Decodable {
            var code: CaptureErrorCode
            var message: String
        }

        var error: Detail
    }

    /// Short (a socket path inside it must fit in 107 bytes).
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("ctl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

final class CapturectlTests: XCTestCase {
    private var scratch = ""
    private var env: [String: String] = [:]

    override func setUpWithError() throws {
        scratch = try Capturectl.temporaryDirectory()
        env = Capturectl.environment(socket: scratch + "/nothing-here.sock")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// The error a failed `--json` command printed.
    private func jsonError(_ text: String) throws -> Capturectl.ErrorOutput.Detail {
        try Capturectl.decode(text, as: Capturectl.ErrorOutput.self).error
    }

    // MARK: without a daemon

    func testStatusWithoutDaemonExits69AndSaysHowToStartIt() throws {
        let r = try Capturectl.run(["status"], env: env)
        XCTAssertEqual(r.status, 69, r.stderr)
        XCTAssertEqual(r.status, CaptureErrorCode.agentNotRunning.exitStatus)
        XCTAssertTrue(r.stderr.hasPrefix("capturectl: AGENT_NOT_RUNNING: "), r.stderr)
        XCTAssertTrue(r.stderr.contains("systemctl --user start capture-agent.socket"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }

    func testSocketOptionOverridesTheEnvironment() throws {
        let r = try Capturectl.run(["ping", "--socket", scratch + "/other.sock"], env: env)
        XCTAssertEqual(r.status, 69, r.stderr)
        XCTAssertTrue(r.stderr.contains(scratch + "/other.sock"), r.stderr)
    }

    func testJSONErrorObjectWithoutDaemon() throws {
        for command in [["status", "--json"], ["channels", "--json"], ["ping", "--json"], ["stop", "--json"]] {
            let r = try Capturectl.run(command, env: env)
            XCTAssertEqual(r.status, 69, "\(command): \(r.stderr)")
            let error = try jsonError(r.stdout)
            XCTAssertEqual(error.code, .agentNotRunning, r.stdout)
            XCTAssertTrue(error.message.contains("systemctl --user start capture-agent.socket"))
            XCTAssertTrue(r.stderr.contains("AGENT_NOT_RUNNING"), r.stderr)
        }
    }

    func testTokenIsNeverAcceptedOnTheCommandLine() throws {
        let r = try Capturectl.run(["start", "--token", "abc"], env: env)
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("Unknown option '--token'"), r.stderr)
        XCTAssertFalse(r.stderr.contains("abc"), "the rejected token is echoed: \(r.stderr)")

        let json = try Capturectl.run(["start", "--json", "--token", "abc"], env: env)
        XCTAssertEqual(json.status, 64)
        XCTAssertEqual(try jsonError(json.stdout).code, .invalidRequest)

        for command in ["start", "token"] {
            let help = try Capturectl.run([command, "--help"], env: env)
            XCTAssertEqual(help.status, 0)
            XCTAssertFalse(help.stdout.contains("--token <"), help.stdout)
            XCTAssertTrue(help.stdout.contains("intentionally no --token option"), help.stdout)
        }
        XCTAssertTrue(try Capturectl.run(["start", "--help"], env: env).stdout.contains("--token-file <file>"))
    }

    func testMissingTokenFileIsAClearErrorBeforeConnecting() throws {
        let missing = scratch + "/no-such-token"
        let r = try Capturectl.run(["start", "--token-file", missing], env: env)
        XCTAssertEqual(r.status, CaptureErrorCode.invalidToken.exitStatus, r.stderr)
        XCTAssertTrue(r.stderr.contains("INVALID_TOKEN"), r.stderr)
        XCTAssertTrue(r.stderr.contains(missing) && r.stderr.contains("No such file"), r.stderr)

        let token = try Capturectl.run(["token", "--file", missing, "--json"], env: env)
        XCTAssertEqual(token.status, CaptureErrorCode.invalidToken.exitStatus, token.stderr)
        XCTAssertEqual(try jsonError(token.stdout).code, .invalidToken)

        let unset = try Capturectl.run(["start", "--token-env", "CAPTURECTL_TEST_UNSET"], env: env.filter { $0.key != "CAPTURECTL_TEST_UNSET" })
        XCTAssertEqual(unset.status, CaptureErrorCode.invalidToken.exitStatus, unset.stderr)
        XCTAssertTrue(unset.stderr.contains("CAPTURECTL_TEST_UNSET"), unset.stderr)
    }

    func testTokenFileReadableByOthersIsRefused() throws {
        let path = scratch + "/token"
        try Data("secret-token\n".utf8).write(to: URL(fileURLWithPath: path))
        chmod(path, 0o644)
        let r = try Capturectl.run(["start", "--token-file", path], env: env)
        XCTAssertEqual(r.status, CaptureErrorCode.invalidToken.exitStatus, r.stderr)
        XCTAssertTrue(r.stderr.contains("chmod 600"), r.stderr)
        XCTAssertFalse(r.stderr.contains("secret-token"), r.stderr)

        // Private: read fine, so the next failure is the missing daemon.
        chmod(path, 0o600)
        XCTAssertEqual(try Capturectl.run(["start", "--token-file", path], env: env).status, 69)
    }

    func testUsageErrorsExit64() throws {
        let cases: [[String]] = [
            ["start", "--channel", "display:1", "--primary", "mic:default"],
            ["start", "--channel", "bogus"],
            ["start", "--token-file", "/dev/null", "--token-env", "HOME"],
            ["pause", "--track", "webcam"],
            ["token"],
            ["no-such-command"],
        ]
        for args in cases {
            let r = try Capturectl.run(args, env: env)
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertFalse(r.stderr.isEmpty, "\(args)")
        }
    }

    func testCompletionScripts() throws {
        for shell in ["bash", "zsh", "fish"] {
            let r = try Capturectl.run(["--generate-completion-script", shell], env: env)
            XCTAssertEqual(r.status, 0, "\(shell): \(r.stderr)")
            XCTAssertGreaterThan(r.stdout.count, 500, shell)
            for word in ["channels", "start", "stop", "pause", "resume", "status", "events", "token", "ping", "token-file"] {
                XCTAssertTrue(r.stdout.contains(word), "\(shell) completion script does not mention \(word)")
            }
        }
        let bash = scratch + "/capturectl.bash"
        try Data(try Capturectl.run(["--generate-completion-script", "bash"], env: env).stdout.utf8).write(to: URL(fileURLWithPath: bash))
        let syntax = try runProcess("bash", ["-n", bash], timeout: .seconds(10))
        XCTAssertEqual(syntax.status, 0, syntax.stderr)
    }

    // MARK: sockets of other users

    /// capturectl hands the daemon tokens: it checks who answers on the socket (SO_PEERCRED)
    /// and says nothing to a listener of another user. The listener here runs as nobody.
    func testCapturectlRefusesASocketServedByAnotherUser() throws {
        let shared = scratch + "/shared"
        try FileManager.default.createDirectory(atPath: shared, withIntermediateDirectories: true)
        chmod(scratch, 0o755)
        chmod(shared, 0o777)
        let socket = shared + "/control.sock", heard = shared + "/heard"
        let listener = Process()
        listener.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
        listener.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.listen()
            c, _ = s.accept(); c.settimeout(5)
            data = b""
            try:
                while True:
                    chunk = c.recv(65536)
                    if not chunk: break
                    data += chunk
            except Exception: pass
            open(sys.argv[2], "wb").write(data)
            """, socket, heard]
        try listener.run()
        defer { kill(listener.processIdentifier, SIGKILL); listener.waitUntilExit() }
        let deadline = ContinuousClock.now + .seconds(10)
        while !FileManager.default.fileExists(atPath: socket), ContinuousClock.now < deadline { usleep(20_000) }
        let r = try Capturectl.run(["status"], env: Capturectl.environment(socket: socket))
        XCTAssertEqual(r.status, CaptureErrorCode.permissionDenied.exitStatus, r.stderr)
        XCTAssertTrue(r.stderr.contains("served by uid 65534"), r.stderr)
        listener.waitUntilExit()
        XCTAssertEqual(FileManager.default.contents(atPath: heard)?.count, 0, "capturectl sent the stranger something")
    }

    /// The daemon will not put its socket in a directory another user owns, even one
    /// everybody may write (that user could replace the socket with theirs).
    func testDaemonRefusesASocketDirectoryOfAnotherUser() throws {
        let directory = scratch + "/capture-agent"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chown(directory, 65534, 65534)
        chmod(directory, 0o777)
        let env = daemonEnvironment()
        let r = try runProcess(Capturectl.builtProduct("capture-agent"), ["--transport", "socket"], environment: env,
                               timeout: .seconds(20))
        XCTAssertEqual(r.status, CaptureErrorCode.permissionDenied.exitStatus, r.stderr)
        XCTAssertTrue((r.stderr + r.stdout).contains("belongs to uid 65534"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/control.sock"))
    }

    // MARK: against the real daemon (no display, no audio server)

    /// The daemon's environment: every XDG directory in `scratch`, neither DISPLAY nor
    /// PULSE_SERVER, nothing of systemd's.
    private func daemonEnvironment() -> [String: String] {
        var env = ProcessInfo.processInfo.environment
        for key in ["DISPLAY", "PULSE_SERVER", "CAPTURE_AGENT_SOCKET", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "WATCHDOG_USEC"] {
            env[key] = nil
        }
        for key in ["XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"] {
            env[key] = scratch
        }
        return env
    }

    /// Starts `capture-agent` (the daemon, its default subcommand) with every
    /// XDG directory in `scratch` and neither DISPLAY nor PULSE_SERVER; returns
    /// it and the environment that points capturectl at its socket.
    private func startDaemon() throws -> (Process, [String: String]) {
        var env = daemonEnvironment()
        let socket = scratch + "/capture-agent/control.sock"
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: Capturectl.builtProduct("capture-agent"))
        agent.arguments = ["--transport", "socket"]
        agent.environment = env
        _ = FileManager.default.createFile(atPath: scratch + "/agent.log", contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: scratch + "/agent.log"))
        agent.standardOutput = log
        agent.standardError = log
        try agent.run()
        addTeardownBlock {
            if agent.isRunning { agent.terminate(); agent.waitUntilExit() }
        }
        let deadline = ContinuousClock.now + .seconds(20)
        while !FileManager.default.fileExists(atPath: socket) {
            guard agent.isRunning, ContinuousClock.now < deadline else {
                let text = (try? String(contentsOfFile: scratch + "/agent.log", encoding: .utf8)) ?? ""
                throw CaptureError(.timeout, "capture-agent did not create \(socket): \(text.suffix(2000))")
            }
            usleep(20_000)
        }
        env["CAPTURE_AGENT_SOCKET"] = socket
        return (agent, env)
    }

    private func waitForExit(_ process: Process, within timeout: Duration = .seconds(10)) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { usleep(20_000) }
        return !process.isRunning
    }

    func testAgainstTheDaemonWithoutADisplay() throws {
        let (agent, env) = try startDaemon()

        let ping = try Capturectl.run(["ping", "--json"], env: env)
        XCTAssertEqual(ping.status, 0, ping.stderr)
        let pong = try Capturectl.decode(ping.stdout, as: DaemonInfo.self)
        XCTAssertEqual(pong.pong, true)
        XCTAssertEqual(pong.pid, Int(agent.processIdentifier))
        let pingText = try Capturectl.run(["ping"], env: env)
        XCTAssertEqual(pingText.status, 0, pingText.stderr)
        XCTAssertTrue(pingText.stdout.contains("pid \(agent.processIdentifier)"), pingText.stdout)

        let status = try Capturectl.run(["status", "--json"], env: env)
        XCTAssertEqual(status.status, 0, status.stderr)
        let statusResult = try Capturectl.decode(status.stdout, as: StatusResult.self)
        XCTAssertEqual(statusResult.state, .idle)
        XCTAssertEqual(statusResult.daemon?.pid, Int(agent.processIdentifier))
        let statusText = try Capturectl.run(["status"], env: env)
        XCTAssertEqual(statusText.status, 0, statusText.stderr)
        XCTAssertTrue(statusText.stdout.contains("state:    idle"), statusText.stdout)

        let channels = try Capturectl.run(["channels", "--json"], env: env)
        XCTAssertEqual(channels.status, 0, channels.stderr)
        let listing = try Capturectl.decode(channels.stdout, as: ChannelsResult.self)
        XCTAssertTrue(listing.problems.contains { $0.code == CaptureErrorCode.displayUnavailable.rawValue }, channels.stdout)

        let start = try Capturectl.run(["start", "--json"], env: env)
        XCTAssertEqual(start.status, 69, start.stderr)
        XCTAssertEqual(try jsonError(start.stdout).code, .displayUnavailable)
        XCTAssertTrue(start.stderr.hasPrefix("capturectl: DISPLAY_UNAVAILABLE: "), start.stderr)

        // Nothing records, so pausing is not allowed now.
        let pause = try Capturectl.run(["pause", "--track", "mic"], env: env)
        XCTAssertEqual(pause.status, CaptureErrorCode.invalidState.exitStatus, pause.stderr)
        XCTAssertTrue(pause.stderr.contains("INVALID_STATE"), pause.stderr)

        // The failed start left an event behind.
        let events = try Capturectl.run(["events", "--json"], env: env)
        XCTAssertEqual(events.status, 0, events.stderr)
        let failed = try events.stdout.split(separator: "\n").map { try Capturectl.decode($0, as: ControlEvent.self) }
            .compactMap(\.recordingFailed)
        XCTAssertEqual(failed.map(\.code), [.displayUnavailable], events.stdout)
        XCTAssertEqual(failed.map(\.phase), [.start], events.stdout)
        // The text form: every field of the payload as key=value.
        let text = try Capturectl.run(["events"], env: env)
        XCTAssertEqual(text.status, 0, text.stderr)
        let line = try XCTUnwrap(text.stdout.split(separator: "\n").first { $0.contains(" recording-failed ") }, text.stdout)
        XCTAssertTrue(line.contains(" code=DISPLAY_UNAVAILABLE ") && line.contains(" message=\"") && line.hasSuffix(" phase=start"),
                      String(line))
    }

    func testEventsFollowEndsWith69WhenTheDaemonGoesAway() throws {
        let (agent, env) = try startDaemon()
        let follower = Process()
        follower.executableURL = URL(fileURLWithPath: Capturectl.binary)
        follower.arguments = ["events", "--follow"]
        follower.environment = env
        follower.standardOutput = FileHandle.nullDevice
        follower.standardError = FileHandle.nullDevice
        try follower.run()
        addTeardownBlock { if follower.isRunning { follower.terminate() } }
        usleep(500_000)
        XCTAssertTrue(follower.isRunning, "events --follow ended on its own (status \(follower.terminationStatus))")

        agent.terminate()
        XCTAssertTrue(waitForExit(agent), "capture-agent did not stop on SIGTERM")
        XCTAssertTrue(waitForExit(follower), "events --follow kept running after the daemon went away")
        XCTAssertEqual(follower.terminationStatus, 69)
    }

    func testWatchAndFollowExitZeroOnInterrupt() throws {
        let (_, env) = try startDaemon()
        for args in [["status", "--watch"], ["status", "--watch", "--json"], ["events", "--follow"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: Capturectl.binary)
            process.arguments = args
            process.environment = env
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            usleep(1_300_000)
            XCTAssertTrue(process.isRunning, "\(args) ended on its own")
            process.interrupt()
            XCTAssertTrue(waitForExit(process), "\(args) ignored SIGINT")
            XCTAssertEqual(process.terminationStatus, 0, "\(args)")
            XCTAssertEqual(process.terminationReason, .exit, "\(args)")
        }
    }
}
