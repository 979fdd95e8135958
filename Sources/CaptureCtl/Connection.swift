public import ArgumentParser
public import CaptureControl
import CaptureCore
import CaptureSystem
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
public import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// `--socket` and `--json`, shared by every command.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The daemon's control socket (default: $CAPTURE_AGENT_SOCKET, else $XDG_RUNTIME_DIR/capture-agent/control.sock).",
        valueName: "path"), completion: .file())
    var socket: String?

    @Flag(name: .long, help: "Print the result object as JSON on stdout.")
    var json = false

    var socketPath: String { socket ?? ControlSocketPath.resolve() }

    func connect() throws(CaptureError) -> ControlClient {
        try ControlClient(socketPath: socketPath)
    }
}

/// A command that talks to the daemon: `execute` does the work; a CaptureError
/// it throws is reported (stderr, and JSON with --json) and sets the exit status.
protocol ClientCommand: ParsableCommand {
    var connection: ConnectionOptions { get }
    func execute() throws(CaptureError)
}

extension ClientCommand {
    func run() throws {
        do {
            try execute()
        } catch {
            Output.fail(error, json: connection.json)
        }
    }
}

/// The daemon closed the connection while we were waiting on it.
func daemonWentAway(_ error: CaptureError, _ client: ControlClient) -> CaptureError {
    guard client.isClosed || error.code == .ioError else { return error }
    return CaptureError(.agentNotRunning,
        "capture-agent closed the connection (it stopped or restarted): see `systemctl --user status capture-agent`")
}

/// A result read as the struct Results.swift has for it: capturectl reads fields by name, never by
/// string key. A result that does not decode means this capturectl and the daemon disagree.
func decodeResult<Result: Decodable>(_ value: JSONValue, of command: ControlCommand, as type: Result.Type) throws(CaptureError) -> Result {
    do {
        return try value.decode(Result.self)
    } catch {
        throw CaptureError(.internalError, "the daemon's \(command.rawValue) result is not what this capturectl understands: \(error)")
    }
}

/// Exits 0 on Ctrl-C (for --watch and --follow). Output is written unbuffered, so nothing is lost.
func exitZeroOnInterrupt() {
    signal(SIGINT) { _ in _exit(0) }
}

enum Output {
    static func line(_ text: String) {
        StandardStream.output.write(text + "\n")
    }

    static func warn(_ text: String) {
        StandardStream.error.write("capturectl: warning: \(text)\n")
    }

    /// Sorted keys; pretty for one-shot results, compact (one object per line) for streams.
    static func json(_ value: some Encodable, pretty: Bool = true) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(value)) ?? Data("null".utf8)
        StandardStream.output.write(data + Data("\n".utf8))
    }

    static func jsonError(code: String, message: String) {
        json(JSONValue.object(["error": .object(["code": .string(code), "message": .string(message)])]), pretty: false)
    }

    static func fail(_ error: CaptureError, json: Bool) -> Never {
        StandardStream.error.write("capturectl: \(error.code.rawValue): \(error.message)\n")
        if json { jsonError(code: error.code.rawValue, message: error.message) }
        exit(error.code.exitStatus)
    }

    static var isTerminal: Bool { isatty(STDOUT_FILENO) != 0 }
}

// MARK: Formatting

enum Format {
    /// "12.3s", "4m05s", "1h02m03s"; "-" when unknown.
    static func duration(ns: Int64?) -> String {
        guard let ns, ns >= 0 else { return "-" }
        let tenths = ns / 100_000_000
        if tenths < 600 { return "\(tenths / 10).\(tenths % 10)s" }
        let s = ns / 1_000_000_000
        if s < 3600 { return "\(s / 60)m\(pad(s % 60))s" }
        return "\(s / 3600)h\(pad(s / 60 % 60))m\(pad(s % 60))s"
    }

    static func milliseconds(_ ms: Int64?) -> String {
        guard let ms else { return "-" }
        return ms < 1000 ? "\(ms)ms" : duration(ns: ms * 1_000_000)
    }

    static func bytes(_ n: Int64?) -> String {
        guard let n else { return "-" }
        if n < 1024 { return "\(n) B" }
        var value = Double(n) / 1024
        for unit in ["KiB", "MiB", "GiB"] {
            if value < 1024 { return "\(value.fixed(1)) \(unit)" }
            value /= 1024
        }
        return "\(value.fixed(1)) TiB"
    }

    static func number<N: BinaryInteger>(_ v: N?) -> String { v.map { String($0) } ?? "-" }

    static func number(_ v: Double?) -> String { v.map { $0.fixed(1) } ?? "-" }

    /// A value in `key=value` text: plain strings as they are (quoted if they hold spaces), the rest as JSON.
    static func value(_ v: JSONValue) -> String {
        if case .string(let s) = v {
            return s.isEmpty || s.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) ? JSONValue.string(s).description : s
        }
        return v.description
    }

    private static func pad(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
}

/// A plain text table: columns padded to their widest cell, numeric columns right-aligned.
struct Table {
    var headers: [String]
    var rightAligned: Set<Int> = []
    var rows: [[String]] = []

    func render() -> String {
        let all = [headers] + rows
        let widths = headers.indices.map { i in all.map { i < $0.count ? $0[i].count : 0 }.max() ?? 0 }
        return all.map { row in
            headers.indices.map { i in
                let cell = i < row.count ? row[i] : ""
                let fill = String(repeating: " ", count: widths[i] - cell.count)
                return rightAligned.contains(i) ? fill + cell : (i == headers.count - 1 ? cell : cell + fill)
            }.joined(separator: "  ").trimmingTrailingSpaces
        }.joined(separator: "\n")
    }
}

extension Track: ExpressibleByArgument {}

extension String {
    var trimmingTrailingSpaces: String {
        var s = Substring(self)
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
