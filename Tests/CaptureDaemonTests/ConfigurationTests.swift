import CaptureControl
import CaptureCore
import CaptureTestSupport
import Foundation
import XCTest

/// `capture-agent --print-config` and daemon startup with config.toml,
/// CAPTURE_AGENT_<KEY> variables and flags (later sources win).
final class ConfigurationTests: XCTestCase {
    private var scratch = ""
    private var configFile: String { scratch + "/config/capture-agent/config.toml" }

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory
            .appendingPathComponent("capture-config-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: scratch + "/config/capture-agent", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: scratch + "/run", withIntermediateDirectories: true)
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// This process's environment without any CAPTURE_AGENT_* variable, with private XDG dirs.
    private func environment(_ extra: [String: String] = [:]) -> [String: String] {
        var e = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("CAPTURE_AGENT_") }
        e["XDG_CONFIG_HOME"] = scratch + "/config"
        e["XDG_RUNTIME_DIR"] = scratch + "/run"
        e["XDG_STATE_HOME"] = scratch + "/state"
        for (k, v) in extra { e[k] = v }
        return e
    }

    private func writeConfig(_ text: String, to path: String? = nil) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path ?? configFile))
    }

    private func agent(_ args: [String], env: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runProcess(BuiltBinary.path("capture-agent"), args, environment: environment(env), timeout: .seconds(30))
    }

    /// `--print-config` as key -> (value, source).
    private func printConfig(_ args: [String] = [], env: [String: String] = [:], file: StaticString = #filePath, line: UInt = #line)
        throws -> [String: (value: String, source: String)]
    {
        let r = try agent(["--print-config"] + args, env: env)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        var out: [String: (String, String)] = [:]
        for text in r.stdout.split(separator: "\n") {
            guard !text.hasPrefix("#"), let eq = text.range(of: " = "), let hash = text.range(of: " # ", options: .backwards) else { continue }
            let key = String(text[..<eq.lowerBound])
            let value = text[eq.upperBound..<hash.lowerBound].trimmingCharacters(in: .whitespaces)
            out[key] = (value, String(text[hash.upperBound...]))
        }
        return out
    }

    /// Runs `--print-config`, which must fail with 64; returns stderr.
    @discardableResult
    private func rejected(_ mentions: [String], args: [String] = [], env: [String: String] = [:],
                          file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let r = try agent(["--print-config"] + args, env: env)
        XCTAssertEqual(r.status, 64, "\(args) \(env): stdout \(r.stdout) stderr \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stdout, "", file: file, line: line)
        XCTAssertTrue(r.stderr.hasPrefix("capture-agent: INVALID_REQUEST: "), r.stderr, file: file, line: line)
        for m in mentions {
            XCTAssertTrue(r.stderr.contains(m), "stderr does not mention '\(m)': \(r.stderr)", file: file, line: line)
        }
        return r.stderr
    }

    // MARK: sources

    func testDefaultsWithoutAFile() throws {
        let c = try printConfig()
        XCTAssertEqual(c["fps"]?.value, "30")
        XCTAssertEqual(c["fps"]?.source, "default")
        XCTAssertEqual(c["chunk"]?.value, "\"1s\"")
        XCTAssertEqual(c["socket"]?.value, "\"\(scratch)/run/capture-agent/control.sock\"")
        let r = try agent(["--print-config"])
        XCTAssertTrue(r.stdout.contains("# config file: none"), r.stdout)
    }

    func testConfigFileValuesShowTheFileAsSource() throws {
        try writeConfig("""
            # a comment
            fps = 12
            chunk = "2s"
            preset = "veryfast"
            crf = 30
            max_height = 720
            audio_bitrate = "96k"
            channels = ["display:1", "mic:default", "system_audio:default"]
            draw_cursor = false
            endpoint = "wss://capture.example.com/v1"
            spool_budget = "1GiB"
            log_level = "warning"
            audio_reconnect_timeout = "5s"
            display = ":7"
            socket = "\(scratch)/other.sock"
            """)
        let c = try printConfig()
        let expected: [String: String] = [
            "fps": "12", "chunk": "\"2s\"", "preset": "\"veryfast\"", "crf": "30", "max_height": "720", "audio_bitrate": "\"96000\"",
            "channels": #"["display:1", "mic:default", "system_audio:default"]"#, "draw_cursor": "false",
            "endpoint": "\"wss://capture.example.com/v1\"", "spool_budget": "\"1073741824B\"", "log_level": "\"warning\"",
            "audio_reconnect_timeout": "\"5s\"", "display": "\":7\"", "socket": "\"\(scratch)/other.sock\"",
        ]
        for (key, value) in expected {
            XCTAssertEqual(c[key]?.value, value, key)
            XCTAssertEqual(c[key]?.source, configFile, key)
        }
        XCTAssertNil(c["qp"], "crf replaces qp")
        XCTAssertTrue(try agent(["--print-config"]).stdout.contains("# config file: \(configFile)"))
    }

    func testEnvironmentOverridesTheFileAndFlagsOverrideTheEnvironment() throws {
        try writeConfig("fps = 12\nchunk = \"2s\"\npreset = \"fast\"\n")
        var c = try printConfig(env: ["CAPTURE_AGENT_FPS": "15"])
        XCTAssertEqual(c["fps"]?.value, "15")
        XCTAssertEqual(c["fps"]?.source, "environment (CAPTURE_AGENT_FPS)")
        XCTAssertEqual(c["chunk"]?.source, configFile, "the rest still comes from the file")

        c = try printConfig(["--fps", "20"], env: ["CAPTURE_AGENT_FPS": "15"])
        XCTAssertEqual(c["fps"]?.value, "20")
        XCTAssertEqual(c["fps"]?.source, "flag")
        c = try printConfig(["--set", "fps=25", "--set", "chunk=3s"], env: ["CAPTURE_AGENT_FPS": "15", "CAPTURE_AGENT_CHUNK": "4s"])
        XCTAssertEqual(c["fps"]?.value, "25")
        XCTAssertEqual(c["chunk"]?.value, "\"3s\"")
        XCTAssertEqual(c["chunk"]?.source, "flag")
        c = try printConfig(env: ["CAPTURE_AGENT_CHUNK": "500ms", "CAPTURE_AGENT_PRESET": "medium", "CAPTURE_AGENT_DRAW_CURSOR": "no"])
        XCTAssertEqual(c["chunk"]?.value, "\"500ms\"")
        XCTAssertEqual(c["preset"]?.value, "\"medium\"")
        XCTAssertEqual(c["draw_cursor"]?.value, "false")
        // An empty variable counts as unset.
        c = try printConfig(env: ["CAPTURE_AGENT_FPS": "", "CAPTURE_AGENT_LOG_LEVEL": ""])
        XCTAssertEqual(c["fps"]?.value, "12")
        XCTAssertEqual(c["log_level"]?.value, "\"info\"")

        // --config and CAPTURE_AGENT_CONFIG name another file (which then must exist).
        let other = scratch + "/other.toml"
        try writeConfig("fps = 7\n", to: other)
        c = try printConfig(["--config", other])
        XCTAssertEqual(c["fps"]?.value, "7")
        XCTAssertEqual(c["fps"]?.source, other)
        XCTAssertEqual(c["chunk"]?.source, "default", "the default file is not read as well")
        XCTAssertEqual(try printConfig(env: ["CAPTURE_AGENT_CONFIG": other])["fps"]?.value, "7")
        try rejected(["missing.toml", "does not exist"], args: ["--config", scratch + "/missing.toml"])
    }

    // MARK: errors

    func testUnknownKeyExits64AndNamesTheKeyAndTheFile() throws {
        try writeConfig("fps = 12\nbogus_key = 1\n")
        try rejected(["bogus_key", configFile, "known:"])
        try writeConfig("fps = 12\n[daemon]\nfps = 3\n")
        try rejected(["'daemon'", configFile])
        try FileManager.default.removeItem(atPath: configFile)
        try rejected(["frames", "flag"], args: ["--set", "frames=3"])
        try rejected(["key=value"], args: ["--set", "fps"])
        // Unknown CAPTURE_AGENT_ variables are not settings (CAPTURE_AGENT_CONFIG, other tools' variables).
        XCTAssertEqual(try agent(["--print-config"], env: ["CAPTURE_AGENT_SOMETHING": "1"]).status, 0)
    }

    func testTOMLSyntaxErrorExits64WithLineAndColumn() throws {
        try writeConfig("fps = 12\n\nchunk = \"2s\n")
        let stderr = try rejected([configFile + ":3:"])
        XCTAssertNotNil(stderr.range(of: #"config\.toml:3:\d+: "#, options: .regularExpression), stderr)
        try writeConfig("fps = 12\nfps = 13\n")
        try rejected([configFile + ":2:"])
        try writeConfig("= 5\n")
        try rejected([configFile + ":1:"])
    }

    func testWrongTypesAndOutOfRangeValuesAreClearErrors() throws {
        let cases: [(String, [String])] = [
            ("fps = \"fast\"", ["fps must be an integer", configFile]),
            ("fps = 12.5", ["fps must be an integer"]),
            ("fps = 0", ["fps 0 is out of range 1-60", configFile]),
            ("fps = 61", ["fps 61 is out of range"]),
            ("chunk = \"20s\"", ["chunk must be between 0.5s and 10s", configFile]),
            ("chunk = \"soon\"", ["chunk must be a duration", configFile]),
            ("chunk = true", ["chunk must be a duration"]),
            ("draw_cursor = \"maybe\"", ["draw_cursor must be true or false"]),
            ("channels = \"display:1\"", ["channels must be an array of strings"]),
            ("channels = [\"webcam:1\"]", ["channels", "webcam"]),
            ("channels = [1]", ["channels must be an array of strings"]),
            ("qp = 99", ["qp 99 is out of range 0-51"]),
            ("log_level = \"loud\"", ["log_level 'loud'"]),
            ("endpoint = \"ftp://example.com\"", ["endpoint must be a ws://"]),
            ("socket = \"relative.sock\"", ["socket must be an absolute path"]),
            ("spool_budget = \"lots\"", ["spool_budget must be a size"]),
            ("video_bitrate = \"fast\"", ["video_bitrate must be a bitrate"]),
            ("max_height = 8", ["max_height 8 is too small"]),
            ("preset = \"turbo\"", ["preset 'turbo'", configFile]),
            ("audio_bitrate = \"1k\"", ["audio_bitrate 1000 is out of range", configFile]),
        ]
        for (toml, mentions) in cases {
            try writeConfig(toml + "\n")
            try rejected(mentions)
        }
        try FileManager.default.removeItem(atPath: configFile)
        try rejected(["CAPTURE_AGENT_FPS", "fps must be an integer"], env: ["CAPTURE_AGENT_FPS": "abc"])
        try rejected(["fps 0 is out of range", "flag"], args: ["--fps", "0"])
        try rejected(["preset 'turbo'", "flag"], args: ["--set", "preset=turbo"])
        // The daemon itself refuses to start with a bad setting (and says why).
        let r = try agent(["--set", "fps=0"])
        XCTAssertEqual(r.status, 64, r.stderr)
        XCTAssertTrue(r.stderr.contains("fps 0 is out of range"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: scratch + "/run/capture-agent/control.sock"))
    }

    func testPrintedConfigurationReadsBackTheSame() throws {
        try writeConfig("fps = 24\nchunk = 2.5\ncrf = 28\nchannels = [\"display:1\"]\nmax_height = 1080\naudio_reconnect_timeout = \"250ms\"\n")
        let first = try agent(["--print-config", "--set", "video_bitrate=3M", "--set", "endpoint=https://e.example/x"])
        XCTAssertEqual(first.status, 0, first.stderr)
        let copy = scratch + "/printed.toml"
        try writeConfig(first.stdout, to: copy)
        let second = try agent(["--print-config", "--config", copy])
        XCTAssertEqual(second.status, 0, "the printed configuration is not a valid config file: \(second.stderr)\n\(first.stdout)")
        func values(_ text: String) -> [String] {
            text.split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.components(separatedBy: " # ")[0].trimmingCharacters(in: .whitespaces) }
        }
        XCTAssertEqual(values(second.stdout), values(first.stdout))
        XCTAssertTrue(first.stdout.contains("chunk = \"2500ms\""), first.stdout)
        XCTAssertTrue(first.stdout.contains("video_bitrate = \"3000000\""), first.stdout)
    }

    // MARK: a daemon with a config

    func testDaemonRecordsWithTheConfiguredFpsAndChunkDuration() throws {
        let rig = try TestRig.shared()
        let path = scratch + "/daemon.toml"
        try writeConfig("fps = 10\nchunk = \"2s\"\nchannels = [\"display:1\"]\n", to: path)
        let daemon = try DaemonProcess(rig: rig, name: "config", arguments: ["--config", path])
        XCTAssertTrue(daemon.log.contains("config=\(path)"), daemon.log)
        let c = try daemon.client()
        // No channels named: the configured ones.
        let start = try c.ok(.startRecording, ["sessionId": "cfg-1"], as: StartRecordingResult.self)
        XCTAssertEqual(start.channels.map(\.channelId), ["display:1"], "\(start)")
        usleep(1_000_000)
        let status = try c.ok(.getStatus, as: StatusResult.self)
        XCTAssertEqual(status.channels.first?.fps, 10, "\(status)")
        usleep(3_500_000)
        let stop = try c.ok(.stopRecording, as: StopRecordingResult.self)
        let chunks = stop.summary.channels.first?.chunks ?? 0
        XCTAssertGreaterThanOrEqual(chunks, 2, "4.5 s in 2 s chunks: \(stop)")
        let dir = daemon.sessionDirectory("cfg-1") + "/display-1"
        let media = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".ts") }.sorted()
        XCTAssertEqual(media.count, Int(chunks))
        let first = try Media.probe(dir + "/" + media[0])
        let video = try XCTUnwrap(first.stream("video"))
        print("config chunk: duration \(video.duration) s, \(video.frameCount) frames, avg rate \(video.frameRate)")
        XCTAssertEqual(video.duration, 2.0, accuracy: 0.25, "chunk duration")
        XCTAssertEqual(Double(video.frameCount), 20, accuracy: 2.5, "frames in a 2 s chunk at 10 fps")
        XCTAssertEqual(video.frameRate, 10, accuracy: 1.0, "frame rate")
        XCTAssertEqual(daemon.terminate(), 0)
    }
}
