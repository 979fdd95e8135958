import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// packaging/install.sh and uninstall.sh, and the installed systemd units
/// checked by the real `systemd-analyze --user verify`.
final class UnitFileTests: XCTestCase {
    private var directory = ""
    /// capture-agent and capturectl as built for the tests (scripts/test builds them first).
    private var binaryDirectory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("units")
        binaryDirectory = directory + "/bin-source"
        try FileManager.default.createDirectory(atPath: binaryDirectory, withIntermediateDirectories: true)
        for name in ["capture-agent", "capturectl"] {
            let source = BuiltProduct.path(name)
            // No stand-in: installing and verifying units around /bin/true proves nothing
            // about the products (swift build --build-tests builds them).
            guard FileManager.default.isExecutableFile(atPath: source) else {
                throw CaptureError(.internalError, "\(source) is not built; run scripts/test (it builds every product first)")
            }
            try FileManager.default.copyItem(atPath: source, toPath: binaryDirectory + "/" + name)
        }
        // systemd-analyze --user needs a runtime directory (%t) it may write to.
        try FileManager.default.createDirectory(atPath: directory + "/run", withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try FileManager.default.createDirectory(atPath: directory + "/home", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: Helpers

    /// A clean environment: no DESTDIR, PREFIX or XDG_* from the caller, HOME in the temp dir.
    private func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var env = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin",
            "HOME": directory + "/home",
            "XDG_RUNTIME_DIR": directory + "/run",
            "LANG": "C.UTF-8",
        ]
        for (k, v) in extra { env[k] = v }
        return env
    }

    private func install(_ args: [String], env: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(Repo.root + "/packaging/install.sh", args, environment: environment(env), timeout: .seconds(120))
    }

    /// `systemd-analyze --user verify` on unit files: its whole output and status.
    private func verify(_ units: [String]) throws -> (status: Int32, output: String) {
        let r = try runProcess("/usr/bin/systemd-analyze", ["--user", "verify"] + units,
                               environment: environment(), timeout: .seconds(60))
        return (r.status, (r.stdout + r.stderr).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    private func read(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    /// The value of every `key=` line (whole-line keys, comments skipped).
    private func values(_ key: String, in unit: String) -> [String] {
        unit.split(separator: "\n").compactMap { line in
            line.hasPrefix(key + "=") ? String(line.dropFirst(key.count + 1)) : nil
        }
    }

    // MARK: Tests

    func testInstalledUnitsPassSystemdAnalyzeVerify() throws {
        let prefix = directory + "/prefix"
        let r = try install(["--prefix", prefix, "--binary-dir", binaryDirectory])
        XCTAssertEqual(r.status, 0, "install.sh failed: \(r.stdout)\n\(r.stderr)")
        let unitDir = prefix + "/lib/systemd/user"
        let service = unitDir + "/capture-agent.service", socket = unitDir + "/capture-agent.socket"

        let check = try verify([service, socket])
        XCTAssertEqual(check.output, "", "systemd-analyze verify complained")
        XCTAssertEqual(check.status, 0)

        let serviceText = try read(service)
        XCTAssertEqual(values("ExecStart", in: serviceText), [prefix + "/bin/capture-agent --transport socket"])
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: prefix + "/bin/capture-agent"))
        XCTAssertTrue(FileManager.default.contentsEqual(atPath: prefix + "/bin/capture-agent",
                                                        andPath: binaryDirectory + "/capture-agent"))
        XCTAssertEqual(values("Type", in: serviceText), ["notify"])
        XCTAssertEqual(values("NotifyAccess", in: serviceText), ["main"])
        XCTAssertEqual(values("WatchdogSec", in: serviceText), ["30s"])
        XCTAssertEqual(values("Also", in: serviceText), ["capture-agent.socket"])
        XCTAssertEqual(values("PrivateTmp", in: serviceText), [], "PrivateTmp would hide /tmp/.X11-unix")
        XCTAssertEqual(values("PrivateIPC", in: serviceText), [], "PrivateIPC would break MIT-SHM")

        let socketText = try read(socket)
        XCTAssertEqual(values("ListenStream", in: socketText), ["%t/capture-agent/control.sock"])
        XCTAssertEqual(values("SocketMode", in: socketText), ["0600"])
        XCTAssertEqual(values("DirectoryMode", in: socketText), ["0700"])
        XCTAssertEqual(values("FileDescriptorName", in: socketText), ["control"])
        XCTAssertEqual(values("Accept", in: socketText), ["no"])
        // The socket is the repository's file as is.
        XCTAssertEqual(socketText, try read(Repo.root + "/systemd/capture-agent.socket"))

        XCTAssertEqual(try read(prefix + "/share/doc/capture-agent/config.toml.example"),
                       try read(Repo.root + "/packaging/config.toml.example"))
        for completion in ["share/bash-completion/completions/capturectl", "share/zsh/site-functions/_capturectl",
                           "share/fish/vendor_completions.d/capturectl.fish"] {
            let text = try read(prefix + "/" + completion)
            XCTAssertTrue(text.contains("capturectl"), "\(completion) does not look like a capturectl completion")
        }
    }

    func testUserInstallPassesSystemdAnalyzeVerify() throws {
        let home = directory + "/home"
        let r = try install(["--user", "--binary-dir", binaryDirectory])
        XCTAssertEqual(r.status, 0, "install.sh --user failed: \(r.stdout)\n\(r.stderr)")
        let unitDir = home + "/.config/systemd/user"
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: home + "/.local/bin/capture-agent"))
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: home + "/.local/bin/capturectl"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: home + "/.local/share/doc/capture-agent/config.toml.example"))
        XCTAssertEqual(values("ExecStart", in: try read(unitDir + "/capture-agent.service")),
                       [home + "/.local/bin/capture-agent --transport socket"])
        // ~/.config/systemd/user is on the user manager's search path.
        let paths = try runProcess("/usr/bin/systemd-analyze", ["--user", "unit-paths"], environment: environment(),
                                   timeout: .seconds(30))
        XCTAssertTrue(paths.stdout.split(separator: "\n").contains(Substring(unitDir)), paths.stdout)

        let check = try verify([unitDir + "/capture-agent.service", unitDir + "/capture-agent.socket"])
        XCTAssertEqual(check.output, "", "systemd-analyze verify complained")
        XCTAssertEqual(check.status, 0)

        let u = try runProcess(Repo.root + "/packaging/uninstall.sh", ["--user"], environment: environment(), timeout: .seconds(60))
        XCTAssertEqual(u.status, 0, u.stderr)
        for path in ["/.local/bin/capture-agent", "/.local/bin/capturectl", "/.config/systemd/user/capture-agent.service",
                     "/.config/systemd/user/capture-agent.socket", "/.local/share/doc/capture-agent"] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: home + path), "uninstall left \(path)")
        }
    }

    func testDestdirInstallNamesTheFinalPathsAndUninstallRemovesEverything() throws {
        let destdir = directory + "/stage"
        let r = try install(["--binary-dir", binaryDirectory], env: ["DESTDIR": destdir])
        XCTAssertEqual(r.status, 0, "install.sh failed: \(r.stdout)\n\(r.stderr)")
        let root = destdir + "/usr/local"
        for path in ["bin/capture-agent", "bin/capturectl", "lib/systemd/user/capture-agent.service",
                     "lib/systemd/user/capture-agent.socket", "share/doc/capture-agent/config.toml.example"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/" + path), "missing \(path)")
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: root + "/bin/capture-agent")
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o755)
        // The unit names where the binary will be, not the staging directory.
        XCTAssertEqual(values("ExecStart", in: try read(root + "/lib/systemd/user/capture-agent.service")),
                       ["/usr/local/bin/capture-agent --transport socket"])

        let u = try runProcess(Repo.root + "/packaging/uninstall.sh", [], environment: environment(["DESTDIR": destdir]),
                               timeout: .seconds(60))
        XCTAssertEqual(u.status, 0, u.stderr)
        let left = FileManager.default.enumerator(atPath: destdir)?.compactMap { item -> String? in
            guard let item = item as? String else { return nil }
            var isDirectory: ObjCBool = false
            FileManager.default.fileExists(atPath: destdir + "/" + item, isDirectory: &isDirectory)
            return isDirectory.boolValue ? nil : item
        } ?? []
        XCTAssertEqual(left, [], "uninstall.sh left files behind")
    }

    func testVerifyReportsABrokenUnit() throws {
        // The check above can fail: a typo'd key and a missing binary are both reported.
        let prefix = directory + "/prefix"
        let r = try install(["--prefix", prefix, "--binary-dir", binaryDirectory, "--no-completions"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let good = prefix + "/lib/systemd/user"
        let broken = directory + "/broken"
        try FileManager.default.createDirectory(atPath: broken, withIntermediateDirectories: true)
        let service = try read(good + "/capture-agent.service")
        try service.replacingOccurrences(of: "\nRestartSec=", with: "\nRestartSecs=")
            .write(toFile: broken + "/capture-agent.service", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: good + "/capture-agent.socket", toPath: broken + "/capture-agent.socket")
        let typo = try verify([broken + "/capture-agent.service", broken + "/capture-agent.socket"])
        XCTAssertTrue(typo.output.contains("Unknown key 'RestartSecs'"), typo.output)

        try FileManager.default.removeItem(atPath: prefix + "/bin/capture-agent")
        let missing = try verify([good + "/capture-agent.service", good + "/capture-agent.socket"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.output.contains(prefix + "/bin/capture-agent"), missing.output)
    }

    func testInstallRefusesWithoutTheDaemonBinary() throws {
        let empty = directory + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let r = try install(["--prefix", directory + "/prefix", "--binary-dir", empty])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("capture-agent is missing"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/prefix"), "nothing is installed on failure")
    }

    func testInstallWithoutCapturectlWarnsAndInstallsTheRest() throws {
        try FileManager.default.removeItem(atPath: binaryDirectory + "/capturectl")
        let prefix = directory + "/prefix"
        let r = try install(["--prefix", prefix, "--binary-dir", binaryDirectory])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("capturectl is missing"), r.stderr)
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: prefix + "/bin/capture-agent"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: prefix + "/bin/capturectl"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: prefix + "/share/bash-completion/completions/capturectl"))
    }
}
