import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// packaging/build-deb.sh with the real dpkg-deb and dpkg-shlibdeps.
final class DebianPackageTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory("deb")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func buildDeb(binaries: [String: String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let bins = directory + "/bins"
        try FileManager.default.createDirectory(atPath: bins, withIntermediateDirectories: true)
        for (name, source) in binaries { try FileManager.default.copyItem(atPath: source, toPath: bins + "/" + name) }
        let env = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": directory, "LANG": "C.UTF-8"]
        return try runProcess(Repo.root + "/packaging/build-deb.sh",
                              ["--out", directory + "/out", "--binary-dir", bins, "--version", "1.2.3",
                               // built by scripts/test (swift build --product generate-manual)
                               "--manual-tool", BuiltProduct.path("generate-manual")],
                              environment: env, timeout: .seconds(120))
    }

    /// The release binaries scripts/test builds (`swift build -c release --static-swift-stdlib`),
    /// what the package really ships.
    private func releaseBinary(_ name: String) throws -> String {
        guard let dir = ProcessInfo.processInfo.environment["CAPTURE_TEST_RELEASE_DIR"], !dir.isEmpty else {
            throw CaptureError(.internalError, """
                CAPTURE_TEST_RELEASE_DIR is not set: run scripts/test, or build with                 swift build -c release --static-swift-stdlib --product \(name) and set it to the bin path
                """)
        }
        let path = dir + "/" + name
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw CaptureError(.internalError, "no release \(name) in \(dir)")
        }
        return path
    }

    func testPackageHoldsTheUnitsAndDependsOnWhatTheBinariesLink() throws {
        let r = try buildDeb(binaries: ["capture-agent": try releaseBinary("capture-agent"),
                                        "capturectl": try releaseBinary("capturectl")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let deb = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(deb.hasSuffix("/capture-agent_1.2.3_\(try architecture()).deb"), deb)

        let fields = try runProcess("dpkg-deb", ["-f", deb], timeout: .seconds(30))
        XCTAssertEqual(fields.status, 0, fields.stderr)
        XCTAssertTrue(fields.stdout.contains("Package: capture-agent\n"), fields.stdout)
        XCTAssertTrue(fields.stdout.contains("Version: 1.2.3\n"), fields.stdout)
        let depends = try XCTUnwrap(fields.stdout.split(separator: "\n").first { $0.hasPrefix("Depends: ") })
        let packages = Set(depends.dropFirst("Depends: ".count).split(separator: ",").map {
            String($0.split(separator: "(")[0].split(separator: "|")[0]).trimmingCharacters(in: .whitespaces)
        })
        // What the binaries link, each by its Debian 12 package: X11 (XShm, XFixes, XDamage,
        // XRandR), PulseAudio, FFmpeg, x264, libwebsockets; and no Swift toolchain.
        for package in ["libc6", "libx11-6", "libxext6", "libxfixes3", "libxdamage1", "libxrandr2", "libpulse0",
                        "libavcodec59", "libavformat59", "libavutil57", "libswscale6", "libx264-164", "libwebsockets17"] {
            XCTAssertTrue(packages.contains(package), "\(package) is not in \(depends)")
        }
        XCTAssertFalse(depends.contains("swift"), String(depends))

        let extracted = directory + "/x"
        XCTAssertEqual(try runProcess("dpkg-deb", ["-x", deb, extracted], timeout: .seconds(30)).status, 0)
        let service = try String(contentsOfFile: extracted + "/usr/lib/systemd/user/capture-agent.service", encoding: .utf8)
        XCTAssertTrue(service.contains("\nExecStart=/usr/bin/capture-agent --transport socket\n"))
        for path in ["usr/bin/capture-agent", "usr/bin/capturectl", "usr/lib/systemd/user/capture-agent.socket",
                     "usr/share/doc/capture-agent/config.toml.example"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: extracted + "/" + path), "missing \(path)")
        }
        // The man pages, generated from the same definitions as --help.
        for (page, text) in [("usr/share/man/man1/capturectl.1.gz", "capturectl"),
                             ("usr/share/man/man8/capture-agent.8.gz", "capture-agent")] {
            let rendered = try runProcess("man", ["-l", "-P", "cat", extracted + "/" + page],
                                          environment: ["PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LANG": "C.UTF-8"],
                                          timeout: .seconds(30))
            XCTAssertEqual(rendered.status, 0, "\(page): \(rendered.stderr)")
            XCTAssertTrue(rendered.stdout.contains("NAME") && rendered.stdout.contains(text), "\(page): \(rendered.stdout.prefix(500))")
        }
        let ctlPage = try runProcess("man", ["-l", "-P", "cat", extracted + "/usr/share/man/man1/capturectl.1.gz"],
                                     environment: ["PATH": "/usr/bin:/bin", "MANWIDTH": "200"], timeout: .seconds(30)).stdout
        for subcommand in ["channels", "start", "stop", "pause", "resume", "status", "events", "token", "ping"] {
            XCTAssertTrue(ctlPage.contains(subcommand), "capturectl(1) lacks \(subcommand)")
        }
        for path in ["usr/share/doc/capture-agent/copyright", "usr/share/doc/capture-agent/changelog.Debian.gz",
                     "usr/share/bash-completion/completions/capturectl", "usr/share/zsh/site-functions/_capturectl",
                     "usr/share/fish/vendor_completions.d/capturectl.fish"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: extracted + "/" + path), "missing \(path)")
        }
        let contents = try runProcess("dpkg-deb", ["-c", deb], timeout: .seconds(30))
        XCTAssertFalse(contents.stdout.contains("/DEBIAN"), contents.stdout)
        XCTAssertTrue(contents.stdout.split(separator: "\n").allSatisfy { $0.contains("root/root") }, contents.stdout)
    }

    func testBinariesThatNeedTheToolchainsSwiftRuntimeAreRefused() throws {
        // This test bundle links libswiftCore.so and friends from the toolchain,
        // as any Swift binary built without --static-swift-stdlib does.
        let bundle = try XCTUnwrap(ActivatedChild.testBundleExecutable())
        let r = try buildDeb(binaries: ["capture-agent": bundle])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("libswiftCore.so (needed by capture-agent)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("--static-swift-stdlib"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/out/capture-agent_1.2.3_\(try architecture()).deb"))
    }

    private func architecture() throws -> String {
        try runProcess("dpkg", ["--print-architecture"], timeout: .seconds(10)).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
