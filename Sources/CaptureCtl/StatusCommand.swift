import ArgumentParser
import CaptureControl
import CaptureCore
#if canImport(Glibc)
import Glibc
#endif

struct StatusCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the daemon's state, the session and its channels (getStatus).")

    @Flag(name: .long, help: """
        Refresh every second until Ctrl-C: redraws on a terminal; otherwise prints one line \
        (with --json one JSON object) per second.
        """)
    var watch = false

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let client = try connection.connect()
        guard watch else {
            let status = try client.call(ControlCommand.getStatus.rawValue, timeout: .seconds(30))
            return connection.json ? Output.json(status) : Output.line(Self.report(status))
        }
        exitZeroOnInterrupt()
        let redraw = Output.isTerminal && !connection.json
        while true {
            let status: JSONValue
            do { status = try client.call(ControlCommand.getStatus.rawValue, timeout: .seconds(30)) } catch {
                throw daemonWentAway(error, client)
            }
            if connection.json {
                Output.json(status, pretty: false)
            } else if redraw {
                Output.line("\u{1B}[H\u{1B}[2J" + WallClock.iso8601(nanoseconds: WallClock.now()) + "  (Ctrl-C to quit)\n\n" + Self.report(status))
            } else {
                Output.line(Self.oneLine(status))
            }
            usleep(1_000_000)
        }
    }

    private static func channelRows(_ status: JSONValue) -> Table {
        var table = Table(headers: ["CHANNEL", "TYPE", "FPS", "FRAMES", "DROPPED", "CHUNKS", "UPLOADED", "BYTES", "UPLOAD LAG", ""],
                          rightAligned: [2, 3, 4, 5, 6, 7, 8])
        for c in status["channels"]?.arrayValue ?? [] {
            table.rows.append([
                c["channel_id"]?.stringValue ?? "?", c["type"]?.stringValue ?? "-",
                Format.number(c["fps"]), Format.number(c["frames"]), Format.number(c["dropped"]),
                Format.number(c["chunksSpooled"]), Format.number(c["chunksUploaded"]),
                Format.bytes(c["bytes"]?.int64Value), Format.milliseconds(c["uploadLagMs"]?.int64Value),
                c["paused"]?.boolValue == true ? "paused" : "",
            ])
        }
        return table
    }

    /// The multi-line human report.
    static func report(_ status: JSONValue) -> String {
        var lines = ["state:    \(status["state"]?.stringValue ?? "?")"]
        if let session = status["sessionId"]?.stringValue { lines.append("session:  \(session)") }
        if let started = Format.time(status["startedAt"]) { lines.append("started:  \(started)") }
        if let elapsed = status["elapsedNs"]?.int64Value { lines.append("elapsed:  \(Format.duration(ns: elapsed))") }
        if let paused = status["pausedTracks"]?.arrayValue?.strings, !paused.isEmpty {
            lines.append("paused:   \(paused.joined(separator: ", "))")
        }
        if let failure = status["failure"], failure != .null {
            lines.append("failure:  \(failure["code"]?.stringValue ?? "?"): \(failure["message"]?.stringValue ?? "")")
        }
        if let d = status["daemon"] {
            lines.append("daemon:   capture-agent \(d["version"]?.stringValue ?? "?"), pid \(Format.number(d["pid"])), "
                + "up \(Format.duration(ns: d["uptimeNs"]?.int64Value)), \(Format.number(d["clients"])) client(s)")
        }
        let table = channelRows(status)
        if !table.rows.isEmpty { lines += ["", table.render()] }
        return lines.joined(separator: "\n")
    }

    /// One `key=value` line per tick (--watch when stdout is not a terminal).
    static func oneLine(_ status: JSONValue) -> String {
        var parts = [WallClock.iso8601(nanoseconds: WallClock.now()), "state=\(status["state"]?.stringValue ?? "?")"]
        if let session = status["sessionId"]?.stringValue { parts.append("session=\(session)") }
        if let elapsed = status["elapsedNs"]?.int64Value { parts.append("elapsed=\(Format.duration(ns: elapsed))") }
        if let paused = status["pausedTracks"]?.arrayValue?.strings, !paused.isEmpty {
            parts.append("paused=\(paused.joined(separator: ","))")
        }
        if let code = status["failure"]?["code"]?.stringValue { parts.append("failure=\(code)") }
        for c in status["channels"]?.arrayValue ?? [] {
            parts.append("\(c["channel_id"]?.stringValue ?? "?"):fps=\(Format.number(c["fps"])),frames=\(Format.number(c["frames"])),"
                + "dropped=\(Format.number(c["dropped"])),chunks=\(Format.number(c["chunksSpooled"]))/\(Format.number(c["chunksUploaded"])),"
                + "bytes=\(Format.number(c["bytes"])),lagMs=\(Format.number(c["uploadLagMs"]))")
        }
        return parts.joined(separator: " ")
    }
}
