import CaptureTestSupport
import Foundation
import XCTest

/// packaging/install.sh and the systemd units, as installed: the files land
/// where systemd and the shells look, ExecStart points at the installed
/// binary, and `systemd-analyze verify` has nothing to say about the units.
final class InstallTests: XCTestCase {
    var root = ""

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("install-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: root) }

    var binaryDir: String { (BuiltBinary.path("capture-agent") as NSString).deletingLastPathComponent }

    func install(_ args: [String], env: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let r = try runProcess(Repo.root + "/packaging/install.sh", args + ["--binary-dir", binaryDir], environment: env, timeout: .seconds(120))
        XCTAssertEqual(r.status, 0, r.stderr)
        return r.stdout
    }

    /// `systemd-analyze verify` on unit files, in system and in user mode: combined output and status.
    func verify(_ units: [String], user: Bool) throws -> (status: Int32, output: String) {
        var env = ProcessInfo.processInfo.environment
        let runtime = root + "/xdg-runtime"
        try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        env["XDG_RUNTIME_DIR"] = runtime
        env["SYSTEMD_LOG_LEVEL"] = "notice"
        let r = try runProcess("systemd-analyze", (user ? ["--user"] : []) + ["verify"] + units, environment: env, timeout: .seconds(60))
        return (r.status, r.stdout + r.stderr)
    }

    func testSystemWideInstallVerifiesCleanly() throws {
        let prefix = root + "/usr"
        _ = try install(["--prefix", prefix])
        let units = prefix + "/lib/systemd/user"
        let service = units + "/capture-agent.service", socket = units + "/capture-agent.socket"
        for path in [prefix + "/bin/capture-agent", prefix + "/bin/capturectl", service, socket,
                     prefix + "/share/bash-completion/completions/capturectl",
                     prefix + "/share/zsh/site-functions/_capturectl",
                     prefix + "/share/fish/vendor_completions.d/capturectl.fish",
                     prefix + "/share/doc/capture-agent/config.toml.example"] {
            let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int ?? 0
            XCTAssertGreaterThan(size, 0, "\(path) is missing or empty")
        }
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: prefix + "/bin/capture-agent"))
        let serviceText = try String(contentsOfFile: service, encoding: .utf8)
        XCTAssertTrue(serviceText.contains("\nExecStart=\(prefix)/bin/capture-agent --transport socket\n"), serviceText)
        XCTAssertTrue(serviceText.contains("\nType=notify\n") && serviceText.contains("\nWatchdogSec="), serviceText)
        let socketText = try String(contentsOfFile: socket, encoding: .utf8)
        for line in ["ListenStream=%t/capture-agent/control.sock", "SocketMode=0600", "DirectoryMode=0700", "FileDescriptorName=control"] {
            XCTAssertTrue(socketText.contains("\n" + line + "\n"), "missing \(line)")
        }
        let bash = try String(contentsOfFile: prefix + "/share/bash-completion/completions/capturectl", encoding: .utf8)
        XCTAssertTrue(bash.contains("pause") && bash.contains("status"), "the bash completion does not know the subcommands")

        for user in [false, true] {
            let v = try verify([service, socket], user: user)
            XCTAssertEqual(v.output, "", "systemd-analyze \(user ? "--user " : "")verify complained")
            XCTAssertEqual(v.status, 0)
        }

        // The check can fail: a typo in a copy of the unit is reported.
        let broken = root + "/broken/capture-agent.service"
        try FileManager.default.createDirectory(atPath: root + "/broken", withIntermediateDirectories: true)
        try serviceText.replacingOccurrences(of: "Type=notify", with: "Type=notifyy")
            .write(toFile: broken, atomically: true, encoding: .utf8)
        XCTAssertTrue(try verify([broken], user: false).output.contains("notifyy"))

        // Uninstall takes the same options and removes every file.
        let r = try runProcess(Repo.root + "/packaging/uninstall.sh", ["--prefix", prefix], timeout: .seconds(60))
        XCTAssertEqual(r.status, 0, r.stderr)
        let left = (FileManager.default.enumerator(atPath: prefix)?.allObjects as? [String] ?? [])
            .filter { !((try? FileManager.default.attributesOfItem(atPath: prefix + "/" + $0)[.type] as? FileAttributeType) == .typeDirectory) }
        XCTAssertEqual(left, [], "uninstall left files behind")
    }

    func testUserInstallGoesUnderHome() throws {
        var env = ProcessInfo.processInfo.environment
        env["HOME"] = root + "/home"
        env["XDG_CONFIG_HOME"] = nil
        _ = try install(["--user"], env: env)
        let service = root + "/home/.config/systemd/user/capture-agent.service"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: root + "/home/.local/bin/capturectl"))
        let text = try String(contentsOfFile: service, encoding: .utf8)
        XCTAssertTrue(text.contains("ExecStart=\(root)/home/.local/bin/capture-agent"), text)
        let v = try verify([service, root + "/home/.config/systemd/user/capture-agent.socket"], user: true)
        XCTAssertEqual(v.output, "")
    }
}
