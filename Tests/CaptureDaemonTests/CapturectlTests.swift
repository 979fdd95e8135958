import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// Runs the `capturectl` binary built next to the test bundle.
enum Capturectl {
    static var binary: String { builtProduct("capturectl") }

    /// A product of this package: beside the test bundle, else in .build/{debug,release}.
    static func builtProduct(_ name: String) -> String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        if dir.lastPathComponent.hasSuffix(".xctest") || dir.path.contains(".xctest/") {
            while dir.pathComponents.count > 1 && !dir.lastPathComponent.hasSuffix(".xctest") { dir.deleteLastPathComponent() }
            dir.deleteLastPathComponent()
        }
        let candidate = dir.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        for config in ["debug", "release"] {
            let p = Repo.root + "/.build/\(config)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return candidate
    }

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

    static func temporaryDirectory(_ name: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("capturectl-tests-\(getpid())-\(name)-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}

final class CapturectlTests: XCTestCase {
    private var scratch = ""
    private var env: [String: String] = [:]

    override func setUpWithError() throws {
        scratch = try Capturectl.temporaryDirectory(name.filter(\.isLetter))
        env = Capturectl.environment(socket: scratch + "/nothing-here.sock")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    private func jsonObject(_ text: String, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
        return try XCTUnwrap(object, "not a JSON object: \(text)", file: file, line: line)
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
            let error = try XCTUnwrap(try jsonObject(r.stdout)["error"] as? [String: Any], r.stdout)
            XCTAssertEqual(error["code"] as? String, "AGENT_NOT_RUNNING")
            XCTAssertTrue((error["message"] as? String ?? "").contains("systemctl --user start capture-agent.socket"))
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
        XCTAssertEqual((try jsonObject(json.stdout)["error"] as? [String: Any])?["code"] as? String, "INVALID_REQUEST")

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
        XCTAssertEqual((try jsonObject(token.stdout)["error"] as? [String: Any])?["code"] as? String, "INVALID_TOKEN")

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
}
