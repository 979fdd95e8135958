import CaptureCore
import CaptureTestSupport
import Foundation
import Synchronization
import XCTest

/// packaging/build-deb.sh with the real dpkg-deb, dpkg-shlibdeps and lintian, on the release
/// binaries (and capture-endpoint linked statically from the debug build's objects); then the
/// packages installed with apt-get on this machine, used and purged.
final class DebianPackageTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("deb")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func buildDeb(binaries: [String: String], in directory: String) throws
        -> (status: Int32, stdout: String, stderr: String)
    {
        let bins = directory + "/bins"
        try FileManager.default.createDirectory(atPath: bins, withIntermediateDirectories: true)
        for (name, source) in binaries { try FileManager.default.copyItem(atPath: source, toPath: bins + "/" + name) }
        let env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": directory, "LANG": "C.UTF-8"]
        return try runProcess(Repo.root + "/packaging/build-deb.sh",
                              ["--out", directory + "/out", "--binary-dir", bins, "--version", "1.2.3",
                               // What the packages hold is under test, not how hard they are squeezed.
                               "--fast-compression",
                               // built by scripts/test (swift build --product generate-manual)
                               "--manual-tool", BuiltProduct.path("generate-manual")],
                              environment: env, timeout: .seconds(300))
    }

    /// The release binaries scripts/test builds (`swift build -c release`, against the
    /// toolchain's shared Swift runtime), what the package really ships.
    private static func releaseBinary(_ name: String) throws -> String {
        guard let dir = ProcessInfo.processInfo.environment["CAPTURE_TEST_RELEASE_DIR"], !dir.isEmpty else {
            throw CaptureError(.internalError, "CAPTURE_TEST_RELEASE_DIR is not set: run scripts/test, or build "
                + "with swift build -c release --product \(name) and set it to the bin path")
        }
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw CaptureError(.internalError, "no release \(name) in \(dir)")
        }
        return path
    }

    /// capture-endpoint as its package ships it, with the Swift runtime and Foundation linked in
    /// statically: scripts/test links it from the debug build's objects
    /// (scripts/link-static-endpoint; a static release build would compile everything again).
    private static func staticEndpoint() throws -> String {
        guard let path = ProcessInfo.processInfo.environment["CAPTURE_TEST_STATIC_ENDPOINT"], !path.isEmpty else {
            throw CaptureError(.internalError, "CAPTURE_TEST_STATIC_ENDPOINT is not set: run scripts/test, or "
                + "scripts/link-static-endpoint OUT and set it to OUT")
        }
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw CaptureError(.internalError, "no static capture-endpoint at \(path)")
        }
        return path
    }

    /// The two packages of the real binaries (capture-agent's, capture-endpoint's), built once
    /// for the tests that need them.
    private static let packages = Mutex<Result<[String], any Error>?>(nil)
    private static let packageDirectory = FileManager.default.temporaryDirectory.path + "/deb-shared-\(getpid())"

    private func builtPackages() throws -> [String] {
        try Self.packages.withLock { built in
            if built == nil {
                built = Result {
                    try? FileManager.default.removeItem(atPath: Self.packageDirectory)
                    try FileManager.default.createDirectory(atPath: Self.packageDirectory, withIntermediateDirectories: true)
                    let r = try Self.buildDeb(binaries: ["capture-agent": try Self.releaseBinary("capture-agent"),
                                                         "capturectl": try Self.releaseBinary("capturectl"),
                                                         "capture-endpoint": try Self.staticEndpoint()],
                                              in: Self.packageDirectory)
                    guard r.status == 0 else { throw CaptureError(.internalError, "build-deb.sh failed: \(r.stderr)") }
                    return r.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                        .filter { !$0.isEmpty }
                }
            }
            return try built!.get()
        }
    }

    /// capture-agent's package.
    private func realPackage() throws -> String {
        let debs = try builtPackages()
        return try XCTUnwrap(debs.first { $0.contains("/capture-agent_") }, "\(debs)")
    }

    /// capture-endpoint's package.
    private func endpointPackage() throws -> String {
        let debs = try builtPackages()
        return try XCTUnwrap(debs.first { $0.contains("/capture-endpoint_") }, "\(debs)")
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: packageDirectory)
        super.tearDown()
    }

    func testPackageHoldsTheUnitsAndDependsOnWhatTheBinariesLink() throws {
        let deb = try realPackage()
        XCTAssertTrue(deb.hasSuffix("/capture-agent_1.2.3_\(try architecture()).deb"), deb)

        let (fields, depends, packages) = try control(deb)
        XCTAssertTrue(fields.contains("Package: capture-agent\n"), fields)
        XCTAssertTrue(fields.contains("Version: 1.2.3\n"), fields)
        // What the binaries link, each by its Debian 12 package: X11 (XShm, XFixes, XDamage,
        // XRandR), Wayland (libwayland-client, sd-bus of libsystemd for the portal, PipeWire),
        // PulseAudio, FFmpeg, x264, libwebsockets; what the bundled Swift runtime links
        // (libstdc++); and no Swift toolchain.
        for package in ["libc6", "libx11-6", "libxext6", "libxfixes3", "libxdamage1", "libxrandr2", "libpulse0",
                        "libwayland-client0", "libsystemd0", "libpipewire-0.3-0",
                        "libavcodec59", "libavformat59", "libavutil57", "libswscale6", "libx264-164", "libwebsockets17",
                        "libstdc++6"] {
            XCTAssertTrue(packages.contains(package), "\(package) is not in \(depends)")
        }
        XCTAssertFalse(depends.contains("swift"), String(depends))

        let extracted = try extract(deb)
        let service = try String(contentsOfFile: extracted + "/usr/lib/systemd/user/capture-agent.service", encoding: .utf8)
        XCTAssertTrue(service.contains("\nExecStart=/usr/bin/capture-agent --transport socket\n"))
        for path in ["usr/bin/capture-agent", "usr/bin/capturectl", "usr/lib/systemd/user/capture-agent.socket",
                     "usr/share/doc/capture-agent/config.toml.example"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: extracted + "/" + path), "missing \(path)")
        }
        // The man pages, generated from the same definitions as --help.
        var rendered: [String: String] = [:]
        for (page, text) in [("usr/share/man/man1/capturectl.1.gz", "capturectl"),
                             ("usr/share/man/man8/capture-agent.8.gz", "capture-agent")] {
            let r = try runProcess("man", ["-l", "-P", "cat", extracted + "/" + page],
                                   environment: ["PATH": "/usr/bin:/bin", "MANWIDTH": "200", "LANG": "C.UTF-8"],
                                   timeout: .seconds(30))
            XCTAssertEqual(r.status, 0, "\(page): \(r.stderr)")
            XCTAssertTrue(r.stdout.contains("NAME") && r.stdout.contains(text), "\(page): \(r.stdout.prefix(500))")
            rendered[text] = r.stdout
        }
        for subcommand in ["channels", "start", "stop", "pause", "resume", "status", "events", "token", "ping"] {
            XCTAssertTrue(rendered["capturectl", default: ""].contains(subcommand), "capturectl(1) lacks \(subcommand)")
        }
        for path in ["usr/share/doc/capture-agent/copyright", "usr/share/doc/capture-agent/changelog.gz",
                     "usr/share/bash-completion/completions/capturectl", "usr/share/zsh/site-functions/_capturectl",
                     "usr/share/fish/vendor_completions.d/capturectl.fish"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: extracted + "/" + path), "missing \(path)")
        }
        let contents = try runProcess("dpkg-deb", ["-c", deb], timeout: .seconds(30))
        XCTAssertFalse(contents.stdout.contains("/DEBIAN"), contents.stdout)
        XCTAssertTrue(contents.stdout.split(separator: "\n").allSatisfy { $0.contains("root/root") }, contents.stdout)
    }

    /// capture-agent and capturectl share one copy of the Swift runtime in
    /// /usr/lib/capture-agent, found through RUNPATH $ORIGIN/../lib/capture-agent, with
    /// FoundationEssentials and without full Foundation or ICU (40 MB of data). Each used to
    /// link its own runtime statically: 82 and 75 MB with Foundation, 17.4 and 15.5 MB
    /// stripped with FoundationEssentials, an 8.4 MB package. The budgets: capturectl at
    /// most 12 MB, the package at most 15 MB.
    func testTheBinariesShareOneLeanSwiftRuntime() throws {
        let deb = try realPackage()
        let extracted = try extract(deb)
        let runtime = extracted + "/usr/lib/capture-agent"
        let shipped = Set(try FileManager.default.contentsOfDirectory(atPath: runtime))
        for lib in ["libswiftCore.so", "libFoundationEssentials.so", "libdispatch.so", "libswift_Concurrency.so"] {
            XCTAssertTrue(shipped.contains(lib), "\(lib) is not in /usr/lib/capture-agent: \(shipped.sorted())")
        }
        for lib in ["libFoundation.so", "libFoundationInternationalization.so", "lib_FoundationICU.so", "libXCTest.so"] {
            XCTAssertFalse(shipped.contains(lib), "the package ships \(lib)")
        }
        var sizes: [String: Int] = [:]
        for name in ["capture-agent", "capturectl"] {
            let path = extracted + "/usr/bin/" + name
            let dynamic = try runProcess("readelf", ["-d", path], timeout: .seconds(30))
            XCTAssertTrue(dynamic.stdout.contains("Library runpath: [$ORIGIN/../lib/capture-agent]"), dynamic.stdout)
            XCTAssertFalse(dynamic.stdout.contains("/opt/") || dynamic.stdout.contains("usr/lib/swift"), dynamic.stdout)
            // Every Swift library the loader finds comes from the package, none from the toolchain.
            let ldd = try runProcess("ldd", [path], timeout: .seconds(30))
            XCTAssertEqual(ldd.status, 0, ldd.stderr)
            let resolved = ldd.stdout.split(separator: "\n").compactMap { line -> (name: String, path: String)? in
                let f = line.split(separator: " ")
                return f.count >= 3 && f[1] == "=>" ? (String(f[0].trimmingCharacters(in: .whitespaces)), String(f[2])) : nil
            }
            XCTAssertFalse(resolved.contains { $0.path == "not" }, "\(name): \(ldd.stdout)")
            let swift = resolved.filter { shipped.contains($0.name) }
            XCTAssertTrue(swift.contains { $0.name == "libswiftCore.so" }, ldd.stdout)
            for lib in swift {
                XCTAssertEqual(URL(fileURLWithPath: lib.path).standardizedFileURL.path, runtime + "/" + lib.name,
                               "\(name) loads \(lib.name) from elsewhere")
            }
            XCTAssertFalse(resolved.contains { $0.name.hasPrefix("libFoundation.so") || $0.name.contains("ICU") }, ldd.stdout)
            sizes[name] = try fileSize(path)
        }
        let runtimeBytes = try shipped.reduce(0) { $0 + (try fileSize(runtime + "/" + $1)) }
        let debBytes = try fileSize(deb)
        print("capture-agent \(sizes["capture-agent", default: 0]) B, capturectl \(sizes["capturectl", default: 0]) B, "
            + "shared runtime \(runtimeBytes) B in \(shipped.count) libraries, package \(debBytes) B")
        XCTAssertLessThanOrEqual(sizes["capturectl", default: .max], 12_000_000, "capturectl's budget")
        XCTAssertLessThanOrEqual(debBytes, 15_000_000, "the package's budget")
        // And they run from there: the versions agree.
        for name in ["capture-agent", "capturectl"] {
            let r = try runProcess(extracted + "/usr/bin/" + name, ["--version"], environment: ["PATH": "/usr/bin:/bin"],
                                   timeout: .seconds(30))
            XCTAssertEqual(r.status, 0, r.stderr)
            XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                           try runProcess(try Self.releaseBinary(name), ["--version"], timeout: .seconds(30))
                               .stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
    }

    func testLintianFindsNoError() throws {
        let debs = try builtPackages()
        XCTAssertEqual(debs.count, 2, "\(debs)")
        // TMPDIR: lintian leaves an (empty) mldbm-elf-* directory in it each run.
        let r = try runProcess("lintian", ["--tag-display-limit", "0", "--pedantic"] + debs,
                               environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": directory, "TMPDIR": directory],
                               timeout: .seconds(300))
        let tags = (r.stdout + r.stderr).split(separator: "\n").filter { $0.range(of: #"^[EWIPX]: "#, options: .regularExpression) != nil }
        print("lintian: \(tags.count) tags\(tags.isEmpty ? "" : ":\n" + tags.joined(separator: "\n"))")
        XCTAssertFalse(tags.contains { $0.hasPrefix("E: ") }, tags.joined(separator: "\n"))
        XCTAssertFalse(tags.contains { $0.hasPrefix("W: ") }, tags.joined(separator: "\n"))
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    }

    /// What a user does: apt-get install ./capture-agent_*.deb, use it, apt-get purge. The
    /// machine's /usr and /etc are the same afterwards, to the file.
    func testInstallRecordAndPurgeLeaveNoTrace() throws {
        let deb = try realPackage()
        guard getuid() == 0 else { throw XCTSkip("installing a package needs root (CI runs as root)") }
        let rig = try TestRig.shared()
        let env = Self.aptEnvironment
        try withInstalled("capture-agent", from: deb) {
            // Every file dpkg says it installed is there.
            let listed = try runProcess("dpkg", ["-L", "capture-agent"], timeout: .seconds(30)).stdout
                .split(separator: "\n").map(String.init)
            for path in ["/usr/bin/capture-agent", "/usr/bin/capturectl", "/usr/lib/systemd/user/capture-agent.service",
                         "/usr/lib/systemd/user/capture-agent.socket", "/usr/share/man/man1/capturectl.1.gz"] {
                XCTAssertTrue(listed.contains(path), "dpkg -L lacks \(path)")
            }
            for path in listed { XCTAssertTrue(FileManager.default.fileExists(atPath: path), "\(path) is listed but missing") }

            let version = try runProcess("/usr/bin/capturectl", ["--version"], timeout: .seconds(30))
            let built = try runProcess(try Self.releaseBinary("capturectl"), ["--version"], timeout: .seconds(30))
            XCTAssertEqual(version.status, 0)
            XCTAssertEqual(version.stdout, built.stdout)
            let man = try runProcess("man", ["-w", "capturectl"], environment: env, timeout: .seconds(30))
            XCTAssertEqual(man.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "/usr/share/man/man1/capturectl.1.gz", man.stderr)

            // The installed units, as systemd reads them.
            let runtime = directory + "/run"
            try FileManager.default.createDirectory(atPath: runtime, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let verify = try runProcess("/usr/bin/systemd-analyze", ["--user", "verify", "/usr/lib/systemd/user/capture-agent.service",
                                                                     "/usr/lib/systemd/user/capture-agent.socket"],
                                        environment: env.merging(["HOME": directory, "XDG_RUNTIME_DIR": runtime]) { $1 },
                                        timeout: .seconds(60))
            XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
            XCTAssertEqual((verify.stdout + verify.stderr).trimmingCharacters(in: .whitespacesAndNewlines), "")

            // A 3 s recording with the installed binary, on the rig.
            let out = directory + "/rec"
            let record = try runProcess("/usr/bin/capture-agent", ["record", "--out", out, "--duration", "3s", "--json"],
                                        environment: rig.childEnvironment(["HOME": directory, "XDG_STATE_HOME": directory + "/state",
                                                                           "XDG_CONFIG_HOME": directory + "/config"]),
                                        timeout: .seconds(60))
            XCTAssertEqual(record.status, 0, record.stderr)
            let summary = try JSONDecoder().decode(RecordingSummary.self, from: Data(record.stdout.utf8))
            XCTAssertEqual(Double(summary.durationNs) / 1e9, 3, accuracy: 0.05)
            XCTAssertEqual(Set(summary.channels.map(\.channel)), ["display:1", "mic:default", "system_audio:default"])
            for channel in summary.channels { XCTAssertGreaterThanOrEqual(channel.chunks, 3, channel.channel) }
            let video = try Media.probe(out + "/display-1/chunk-000000.ts")
            XCTAssertEqual(video.codecName, "h264")
            XCTAssertEqual(video.width, 1920)
            XCTAssertEqual(video.height, 1080)
            try FileManager.default.removeItem(atPath: out)
        }
    }

    /// capture-endpoint's package: the binary as it is (the Swift runtime inside it, nothing
    /// bundled beside it), its system unit (installed, not enabled), its man page, and Depends
    /// from what it links (SQLite, libcrypto, libcurl, FFmpeg for exports).
    func testTheEndpointPackageHoldsItsUnitAndDependsOnWhatItLinks() throws {
        let deb = try endpointPackage()
        XCTAssertTrue(deb.hasSuffix("/capture-endpoint_1.2.3_\(try architecture()).deb"), deb)
        let (fields, depends, packages) = try control(deb)
        XCTAssertTrue(fields.contains("Package: capture-endpoint\n"), fields)
        for package in ["libc6", "libsqlite3-0", "libssl3", "libcurl4", "libavcodec59", "libavformat59", "libavutil57",
                        "libstdc++6"] {
            XCTAssertTrue(packages.contains(package), "\(package) is not in \(depends)")
        }
        XCTAssertFalse(depends.contains("swift"), String(depends))

        let extracted = try extract(deb)
        for path in ["usr/bin/capture-endpoint", "usr/lib/systemd/system/capture-endpoint.service",
                     "usr/share/man/man8/capture-endpoint.8.gz", "usr/share/doc/capture-endpoint/copyright"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: extracted + "/" + path), "missing \(path)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: extracted + "/usr/lib/capture-endpoint"),
                       "a static binary needs no bundled runtime")
        let ldd = try runProcess("ldd", [extracted + "/usr/bin/capture-endpoint"], timeout: .seconds(30))
        XCTAssertEqual(ldd.status, 0, ldd.stderr)
        XCTAssertFalse(ldd.stdout.contains("not found") || ldd.stdout.contains("libswift") || ldd.stdout.contains("libFoundation"),
                       ldd.stdout)
        let version = try runProcess(extracted + "/usr/bin/capture-endpoint", ["--version"],
                                     environment: ["PATH": "/usr/bin:/bin"], timeout: .seconds(30))
        XCTAssertEqual(version.status, 0, version.stderr)
        XCTAssertEqual(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "0.1.0")
    }

    /// What an operator does: apt-get install ./capture-endpoint_*.deb, give it its secrets,
    /// start it, use it, stop it, apt-get purge. systemd is not PID 1 here, so the unit is
    /// checked with systemd-analyze verify and its ExecStart run as systemd would run it: the
    /// credentials in a directory of their own ($CREDENTIALS_DIRECTORY), the state directory
    /// ($STATE_DIRECTORY), SIGTERM to stop (its KillSignal) and a clean exit within its
    /// TimeoutStopSec. The sandboxing options are systemd's to apply and are not exercised.
    func testEndpointInstallServeAndPurgeLeaveNoTrace() throws {
        let deb = try endpointPackage()
        guard getuid() == 0 else { throw XCTSkip("installing a package needs root (CI runs as root)") }
        let env = Self.aptEnvironment
        try withInstalled("capture-endpoint", from: deb) {
            let unitPath = "/usr/lib/systemd/system/capture-endpoint.service"
            let verify = try runProcess("/usr/bin/systemd-analyze", ["verify", unitPath], environment: env, timeout: .seconds(60))
            XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
            XCTAssertEqual((verify.stdout + verify.stderr).trimmingCharacters(in: .whitespacesAndNewlines), "")
            // Installed, not enabled: nothing links it into a target.
            let wants = try runProcess("find", ["/etc/systemd", "-name", "capture-endpoint.service"], timeout: .seconds(30))
            XCTAssertEqual(wants.stdout, "", "enabled by the package")

            // The unit's ExecStart (continuation lines joined), as systemd expands it.
            let unit = try String(contentsOfFile: unitPath, encoding: .utf8).replacingOccurrences(of: "\\\n", with: " ")
            let execStart = try XCTUnwrap(unit.split(separator: "\n").first { $0.hasPrefix("ExecStart=") })
            let credentials = directory + "/credentials", state = directory + "/state"
            for dir in [credentials, state] {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            }
            let key = "cek_" + String(UInt64.random(in: 0...UInt64.max), radix: 16) + "0123456789abcdef"
            let secret = "whsec_" + Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            for (name, value) in [("api-keys", key), ("webhook-secret", secret)] {
                XCTAssertTrue(FileManager.default.createFile(atPath: credentials + "/" + name, contents: Data((value + "\n").utf8),
                                                             attributes: [.posixPermissions: 0o600]))
            }
            let port = try Loopback.freePort()
            var argv = execStart.dropFirst("ExecStart=".count).split(separator: " ").map {
                $0.replacingOccurrences(of: "${STATE_DIRECTORY}", with: state)
                    .replacingOccurrences(of: "${CREDENTIALS_DIRECTORY}", with: credentials)
            }
            XCTAssertEqual(argv.first, "/usr/bin/capture-endpoint", String(execStart))
            let portIndex = try XCTUnwrap(argv.firstIndex(of: "--port"), String(execStart))
            argv[portIndex + 1] = String(port)   // 8470 may be taken on a test machine

            let server = Process()
            server.executableURL = URL(fileURLWithPath: argv[0])
            server.arguments = Array(argv.dropFirst())
            server.environment = ["PATH": "/usr/bin:/bin", "STATE_DIRECTORY": state, "CREDENTIALS_DIRECTORY": credentials]
            let log = Pipe()
            server.standardError = log
            server.standardOutput = log
            let exited = DispatchSemaphore(value: 0)
            server.terminationHandler = { _ in exited.signal() }
            try server.run()
            defer { if server.isRunning { kill(server.processIdentifier, SIGKILL) } }
            try Loopback.waitForListener(port, timeout: 30)
            // The API key it was given works; a token comes back.
            let minted = try runProcess("curl", ["-sS", "-X", "POST", "-H", "x-access-token: \(key)", "-H", "content-type: application/json",
                                                 "-d", "{}", "http://127.0.0.1:\(port)/capture/session/token"], timeout: .seconds(30))
            XCTAssertEqual(minted.status, 0, minted.stderr)
            let answer = (try? JSONSerialization.jsonObject(with: Data(minted.stdout.utf8))) as? [String: Any]
            let token = (answer?["data"] as? [String: Any])?["token"] as? String
            XCTAssertTrue(token?.hasPrefix("cct_") ?? false, minted.stdout)
            XCTAssertTrue(FileManager.default.fileExists(atPath: state + "/endpoint.sqlite"), "no database in the state directory")
            // Stopped the way the unit stops it.
            kill(server.processIdentifier, SIGTERM)
            XCTAssertEqual(exited.wait(timeout: .now() + 30), .success, "still running 30 s (TimeoutStopSec) after SIGTERM")
            server.waitUntilExit()
            let output = String(decoding: log.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(server.terminationStatus, 0, output)
            XCTAssertFalse(output.contains(key) || output.contains(secret), "a secret reached the log")
        }
    }

    static let aptEnvironment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"]

    /// apt-get install `deb` (package `name`, which must not be installed yet), `body`, then
    /// apt-get purge, whatever `body` did; afterwards /usr and /etc are what they were, to the file.
    private func withInstalled(_ name: String, from deb: String, _ body: () throws -> Void) throws {
        let env = Self.aptEnvironment
        let installed = try runProcess("dpkg-query", ["-W", "-f", "${Status}", name], timeout: .seconds(30))
        guard !installed.stdout.contains("installed"), !FileManager.default.fileExists(atPath: "/usr/bin/" + name) else {
            throw CaptureError(.internalError, "\(name) is already installed here; this test would remove it")
        }
        let before = try fileTree()
        var purged = false
        defer {
            if !purged { _ = try? runProcess("apt-get", ["purge", "-y", "-qq", name], environment: env, timeout: .seconds(300)) }
        }
        let install = try runProcess("apt-get", ["install", "-y", "-qq", "--no-install-recommends", deb],
                                     environment: env, timeout: .seconds(300))
        XCTAssertEqual(install.status, 0, install.stdout + install.stderr)
        guard install.status == 0 else { return }
        try body()
        let purge = try runProcess("apt-get", ["purge", "-y", "-qq", name], environment: env, timeout: .seconds(300))
        XCTAssertEqual(purge.status, 0, purge.stdout + purge.stderr)
        purged = true
        let after = try fileTree()
        XCTAssertEqual(after.subtracting(before).sorted(), [], "left behind after the purge")
        XCTAssertEqual(before.subtracting(after).sorted(), [], "removed by install + purge")
        XCTAssertFalse(try runProcess("dpkg-query", ["-W", "-f", "${Status}", name],
                                      timeout: .seconds(30)).stdout.contains("installed"))
    }

    /// Every path under /usr and /etc (what a package may touch; /var holds dpkg's own books).
    private func fileTree() throws -> Set<String> {
        let r = try runProcess("find", ["/usr", "/etc", "-xdev"], timeout: .seconds(120))
        XCTAssertEqual(r.status, 0, r.stderr)
        return Set(r.stdout.split(separator: "\n").map(String.init))
    }

    /// A binary that needs full Foundation (ICU's 40 MB) or the test libraries from the
    /// toolchain does not get them bundled: the package is refused, naming them.
    func testBinariesThatNeedFullFoundationAreRefused() throws {
        // This test bundle links libXCTest.so and libFoundation.so from the toolchain and uses both.
        let bundle = try XCTUnwrap(ActivatedChild.testBundleExecutable())
        let r = try Self.buildDeb(binaries: ["capture-agent": bundle], in: directory)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("libXCTest.so (needed by capture-agent)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("libFoundation.so (needed by capture-agent)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("use FoundationEssentials"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/out/capture-agent_1.2.3_\(try architecture()).deb"))
    }

    /// A package's control fields, its Depends line, and the packages that line names (the
    /// first of each alternative, without versions).
    private func control(_ deb: String) throws -> (fields: String, depends: String, packages: Set<String>) {
        let fields = try runProcess("dpkg-deb", ["-f", deb], timeout: .seconds(30))
        XCTAssertEqual(fields.status, 0, fields.stderr)
        let depends = String(try XCTUnwrap(fields.stdout.split(separator: "\n").first { $0.hasPrefix("Depends: ") }, fields.stdout))
        let packages = Set(depends.dropFirst("Depends: ".count).split(separator: ",").map {
            String($0.split(separator: "(")[0].split(separator: "|")[0]).trimmingCharacters(in: .whitespaces)
        })
        return (fields.stdout, depends, packages)
    }

    /// The package's files under `directory`/x (dpkg-deb -x).
    private func extract(_ deb: String) throws -> String {
        let extracted = directory + "/x"
        XCTAssertEqual(try runProcess("dpkg-deb", ["-x", deb, extracted], timeout: .seconds(30)).status, 0)
        return extracted
    }

    private func fileSize(_ path: String) throws -> Int {
        try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int, path)
    }

    private func architecture() throws -> String {
        try runProcess("dpkg", ["--print-architecture"], timeout: .seconds(10)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
