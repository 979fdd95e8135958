import CaptureControl
public import CaptureCore
import CaptureSystem
public import CapturePipeline
import CaptureSpool
#if canImport(FoundationEssentials)
public import FoundationEssentials
#else
public import Foundation
#endif
import TOMLKit

/// The daemon's settings: built-in defaults, then
/// `$XDG_CONFIG_HOME/capture-agent/config.toml`, then `CAPTURE_AGENT_<KEY>`
/// environment variables, then command-line flags; each later source wins.
/// Every value is validated; an unknown key or a bad value is an error that
/// names the key and where it came from.
public struct DaemonConfiguration: Sendable, Equatable {
    public var fps = 30
    public var chunkNs: Int64 = 1_000_000_000
    public var preset = "ultrafast"
    public var qp: Int? = 23
    public var crf: Int?
    public var videoBitrate: Int?
    public var maxHeight: Int?
    public var audioBitrate = 128_000
    /// Default channels of a session that names none; empty: display:1, mic:default, system_audio:default where present.
    public var channels: [ChannelID] = []
    public var drawCursor = true
    /// The capture endpoint (used by the uplink).
    public var endpoint: String?
    /// PEM CA bundle the uplink verifies a wss:// endpoint with; nil: the system's.
    public var caFile: String?
    /// Most bytes the spool may hold (the uplink deletes acknowledged chunks, oldest first).
    public var spoolBudgetBytes: Int64 = 2 << 30
    public var logLevel = "info"
    public var audioReconnectTimeoutNs: Int64 = 10_000_000_000
    /// At exit, how long uploads that are still moving may take to finish; what is left
    /// stays in the spool for the next start.
    public var shutdownUploadWaitNs: Int64 = 30_000_000_000
    /// X display to capture; nil: $DISPLAY.
    public var display: String?
    /// Which display server display channels record: auto (Wayland in a Wayland session),
    /// x11 or wayland.
    public var displayBackend: DisplayBackendSetting = .auto
    /// Upload over plain ws/http to a host that is not this machine (the token in clear).
    public var allowInsecureUplink = false
    /// Wayland: how long a start waits for the user to answer the screen-sharing dialog.
    public var screenConsentTimeoutNs: Int64 = 60_000_000_000
    /// Control socket path.
    public var socketPath: String

    /// Where each key's value came from: "default", a file path, "environment" or "flag".
    public var sources: [String: String] = [:]

    /// The config file that was read, if any.
    public var configFile: String?

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        socketPath = ControlSocketPath.resolve(environment: environment)   // the rule clients use too
    }

    /// Every key, in the order --print-config shows them.
    public static let keys = [
        "fps", "chunk", "preset", "qp", "crf", "video_bitrate", "max_height", "audio_bitrate", "channels",
        "draw_cursor", "endpoint", "ca_file", "spool_budget", "log_level", "audio_reconnect_timeout", "shutdown_upload_wait", "display",
        "display_backend", "screen_consent_timeout", "socket", "allow_insecure_uplink",
    ]

    /// `$XDG_CONFIG_HOME/capture-agent/config.toml` (or `~/.config/...`).
    public static func defaultFile(environment: [String: String]) -> String {
        if let config = environment["XDG_CONFIG_HOME"], config.hasPrefix("/") {
            return config + "/capture-agent/config.toml"
        }
        let home = environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? HomeDirectory.fromPasswordDatabase()
        return home + "/.config/capture-agent/config.toml"
    }

    /// Loads defaults -> file -> environment -> flags.
    /// - Parameters:
    ///   - file: an explicit config file (must exist); nil: the default path, if it exists.
    ///   - flags: key -> value as typed on the command line.
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                            flags: [(key: String, value: String)] = []) throws(CaptureError) -> DaemonConfiguration {
        var config = DaemonConfiguration(environment: environment)
        for key in keys { config.sources[key] = "default" }
        let path = file ?? environment["CAPTURE_AGENT_CONFIG"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultFile(environment: environment)
        let explicit = file != nil || environment["CAPTURE_AGENT_CONFIG"]?.isEmpty == false
        if FileManager.default.fileExists(atPath: path) {
            try config.apply(tomlFile: path)
            config.configFile = path
        } else if explicit {
            throw CaptureError(.invalidRequest, "config file \(path) does not exist")
        }
        for key in keys {
            let variable = "CAPTURE_AGENT_" + key.uppercased()
            // Empty means unset (as for CAPTURE_AGENT_SOCKET and systemd's `Environment=KEY=`).
            if let value = environment[variable], !value.isEmpty {
                try config.set(key, .text(value), source: "environment (\(variable))")
            }
        }
        for (key, value) in flags {
            try config.set(key, .text(value), source: "flag")
        }
        try config.validate()
        return config
    }

    // MARK: Values

    enum Value {
        case text(String)           // environment and flags: parsed per key
        case toml(any TOMLValueConvertible)
    }

    /// What Foundation's `localizedDescription` said about a failed String(contentsOfFile:)
    /// (FoundationEssentials' CocoaError has no localized text): the same words, so the
    /// message stays as it was.
    static func readFailure(_ error: any Error) -> String {
        guard let error = error as? CocoaError else { return "\(error)" }
        let reasons: [Int: String] = [
            257: "You don’t have permission.",
            258: "The file name is invalid.",
            259: "The file isn’t in the correct format.",
            260: "The file doesn’t exist.",
            261: "The specified text encoding isn’t applicable.",
            262: "The specified URL type isn’t supported.",
            263: "The item is too large.",
            264: "The text encoding of the contents couldn’t be determined.",
        ]
        let code = error.code.rawValue
        return "The operation could not be completed. " + (reasons[code] ?? "(NSCocoaErrorDomain error \(code).)")
    }

    mutating func apply(tomlFile path: String) throws(CaptureError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CaptureError(.ioError, "cannot read \(path): \(Self.readFailure(error))")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw CaptureError(.invalidRequest,
                "\(path):\(error.source.begin.line):\(error.source.begin.column): \(error.description)")
        } catch {
            throw CaptureError(.invalidRequest, "\(path): \(error)")
        }
        for key in table.keys.sorted() {
            guard let value = table[key] else { continue }
            try set(key, .toml(value), source: path)
        }
    }

    mutating func set(_ key: String, _ value: Value, source: String) throws(CaptureError) {
        func fail(_ expected: String) -> CaptureError {
            CaptureError(.invalidRequest, "\(source): \(key) must be \(expected)")
        }
        func text() throws(CaptureError) -> String {
            switch value {
            case .text(let s): return s
            case .toml(let v):
                if let s = v.string { return s }
                if let i = v.int { return String(i) }
                if let d = v.double { return String(d) }
                throw fail("a string")
            }
        }
        func integer() throws(CaptureError) -> Int {
            switch value {
            case .text(let s): if let i = Int(s.trimmingWhitespace(newlines: false)) { return i }
            case .toml(let v): if let i = v.int { return i }
            }
            throw fail("an integer")
        }
        func boolean() throws(CaptureError) -> Bool {
            switch value {
            case .text(let s):
                switch s.lowercased() {
                case "1", "true", "yes", "on": return true
                case "0", "false", "no", "off": return false
                default: break
                }
            case .toml(let v): if let b = v.bool { return b }
            }
            throw fail("true or false")
        }
        func duration() throws(CaptureError) -> Int64 {
            if case .toml(let v) = value, v.string == nil {
                if let i = v.int { return Int64(i) * 1_000_000_000 }
                if let d = v.double, d.isFinite, d >= 0 { return Int64(d * 1e9) }
                throw fail("a duration such as \"1s\" or \"500ms\"")
            }
            do {
                return try parseDuration(try text())
            } catch {
                throw fail("a duration such as \"1s\" or \"500ms\" (\(error.message))")
            }
        }
        func list() throws(CaptureError) -> [String] {
            switch value {
            case .text(let s):
                return s.split(separator: ",").map { $0.trimmingWhitespace(newlines: false) }.filter { !$0.isEmpty }
            case .toml(let v):
                guard let array = v.array else { throw fail("an array of strings") }
                var out: [String] = []
                for item in array {
                    guard let s = item.string else { throw fail("an array of strings") }
                    out.append(s)
                }
                return out
            }
        }

        switch key {
        case "fps": fps = try integer()
        case "chunk": chunkNs = try duration()
        case "preset": preset = try text()
        case "qp": qp = try integer(); crf = nil; videoBitrate = nil
        case "crf": crf = try integer(); qp = nil; videoBitrate = nil
        case "video_bitrate":
            do { videoBitrate = try parseBitrate(try text()) } catch { throw fail("a bitrate such as \"4M\"") }
            qp = nil; crf = nil
        case "max_height": maxHeight = try integer()
        case "audio_bitrate":
            do { audioBitrate = try parseBitrate(try text()) } catch { throw fail("a bitrate such as \"128k\"") }
        case "channels":
            var ids: [ChannelID] = []
            for item in try list() {
                do { ids.append(try ChannelID(parsing: item)) } catch {
                    throw CaptureError(.invalidRequest, "\(source): channels: \(error.message)")
                }
            }
            channels = ids
        case "draw_cursor": drawCursor = try boolean()
        case "endpoint":
            let s = try text()
            endpoint = s.isEmpty ? nil : s
        case "ca_file":
            let s = try text()
            caFile = s.isEmpty ? nil : s
        case "spool_budget":
            do { spoolBudgetBytes = try parseByteSize(try text()) } catch { throw fail("a size such as \"2GiB\"") }
        case "log_level": logLevel = try text().lowercased()
        case "audio_reconnect_timeout": audioReconnectTimeoutNs = try duration()
        case "shutdown_upload_wait": shutdownUploadWaitNs = try duration()
        case "display":
            let s = try text()
            display = s.isEmpty ? nil : s
        case "display_backend":
            guard let backend = DisplayBackendSetting(rawValue: try text().lowercased()) else {
                throw fail("auto, x11 or wayland")
            }
            displayBackend = backend
        case "screen_consent_timeout": screenConsentTimeoutNs = try duration()
        case "socket": socketPath = try text()
        case "allow_insecure_uplink": allowInsecureUplink = try boolean()
        default:
            let known = Self.keys.joined(separator: ", ")
            throw CaptureError(.invalidRequest, "\(source): unknown setting '\(key)' (known: \(known))")
        }
        for k in key == "qp" || key == "crf" || key == "video_bitrate" ? ["qp", "crf", "video_bitrate"] : [key] {
            sources[k] = source
        }
    }

    func validate() throws(CaptureError) {
        guard (1...60).contains(fps) else { throw CaptureError(.invalidRequest, "fps \(fps) is out of range 1-60 (\(sources["fps"] ?? ""))") }
        guard (500_000_000...10_000_000_000).contains(chunkNs) else {
            throw CaptureError(.invalidRequest, "chunk must be between 0.5s and 10s (\(sources["chunk"] ?? ""))")
        }
        for (name, value) in [("qp", qp), ("crf", crf)] {
            if let value, !(0...51).contains(value) {
                throw CaptureError(.invalidRequest, "\(name) \(value) is out of range 0-51 (\(sources[name] ?? ""))")
            }
        }
        // The same limits RecordingOptions.validate applies: a value it would refuse
        // must stop the daemon at startup, not fail every session later.
        let presets = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"]
        guard presets.contains(preset) else {
            throw CaptureError(.invalidRequest, "preset '\(preset)' is not an x264 preset (\(presets.joined(separator: ", "))) (\(sources["preset"] ?? ""))")
        }
        guard (16_000...512_000).contains(audioBitrate) else {
            throw CaptureError(.invalidRequest, "audio_bitrate \(audioBitrate) is out of range 16k-512k (\(sources["audio_bitrate"] ?? ""))")
        }
        if let maxHeight, maxHeight < 16 { throw CaptureError(.invalidRequest, "max_height \(maxHeight) is too small") }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(logLevel) else {
            throw CaptureError(.invalidRequest, "log_level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical (\(sources["log_level"] ?? ""))")
        }
        guard (0...3_600_000_000_000).contains(audioReconnectTimeoutNs) else {
            throw CaptureError(.invalidRequest, "audio_reconnect_timeout must be between 0s and 1h")
        }
        guard (0...3_600_000_000_000).contains(shutdownUploadWaitNs) else {
            throw CaptureError(.invalidRequest, "shutdown_upload_wait must be between 0s and 1h")
        }
        guard (1_000_000_000...3_600_000_000_000).contains(screenConsentTimeoutNs) else {
            throw CaptureError(.invalidRequest, "screen_consent_timeout must be between 1s and 1h (\(sources["screen_consent_timeout"] ?? ""))")
        }
        guard socketPath.hasPrefix("/"), UnixSocketAddress(path: socketPath) != nil else {
            throw CaptureError(.invalidRequest, "socket must be an absolute path of at most \(UnixSocketAddress.maxPathLength) bytes: \(socketPath)")
        }
        if let endpoint, !(endpoint.hasPrefix("ws://") || endpoint.hasPrefix("wss://") || endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://")) {
            throw CaptureError(.invalidRequest, "endpoint must be a ws://, wss://, http:// or https:// URL: \(endpoint)")
        }
    }

    /// The effective settings as TOML, each with where it came from.
    public func rendered() -> String {
        func q(_ s: String) -> String {
            "\"" + s.replacing("\\", with: "\\\\").replacing("\"", with: "\\\"") + "\""
        }
        func seconds(_ ns: Int64) -> String {
            ns % 1_000_000_000 == 0 ? "\(ns / 1_000_000_000)s" : "\(ns / 1_000_000)ms"
        }
        var lines = ["# capture-agent effective configuration",
                     "# config file: \(configFile ?? "none (\(DaemonConfiguration.defaultFile(environment: ProcessInfo.processInfo.environment)) does not exist)")"]
        func add(_ key: String, _ value: String?) {
            let source = sources[key] ?? "default"
            if let value {
                lines.append("\(key) = \(value)".padded(toLength: max(40, key.count + value.count + 4)) + " # \(source)")
            } else {
                lines.append("# \(key) is not set".padded(toLength: 40) + " # \(source)")
            }
        }
        add("fps", String(fps))
        add("chunk", q(seconds(chunkNs)))
        add("preset", q(preset))
        add("qp", qp.map(String.init))
        add("crf", crf.map(String.init))
        add("video_bitrate", videoBitrate.map { q(String($0)) })
        add("max_height", maxHeight.map(String.init))
        add("audio_bitrate", q(String(audioBitrate)))
        add("channels", "[" + channels.map { q($0.description) }.joined(separator: ", ") + "]")
        add("draw_cursor", String(drawCursor))
        add("endpoint", endpoint.map(q))
        add("ca_file", caFile.map(q))
        add("spool_budget", q("\(spoolBudgetBytes)B"))
        add("log_level", q(logLevel))
        add("audio_reconnect_timeout", q(seconds(audioReconnectTimeoutNs)))
        add("shutdown_upload_wait", q(seconds(shutdownUploadWaitNs)))
        add("display", display.map(q))
        add("display_backend", q(displayBackend.rawValue))
        add("screen_consent_timeout", q(seconds(screenConsentTimeoutNs)))
        add("socket", q(socketPath))
        add("allow_insecure_uplink", String(allowInsecureUplink))
        return lines.joined(separator: "\n") + "\n"
    }
}
