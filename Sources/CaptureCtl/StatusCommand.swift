import ArgumentParser
import CaptureControl
import CaptureCore
#if canImport(Glibc)
import Glibc
import CaptureUplink
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
            let value = try client.call(ControlCommand.getStatus.rawValue, timeout: .seconds(30))
            return connection.json ? Output.json(value) : Output.line(Self.report(try Self.decode(value)))
        }
        exitZeroOnInterrupt()
        let redraw = Output.isTerminal && !connection.json
        while true {
            let value: JSONValue
            do { value = try client.call(ControlCommand.getStatus.rawValue, timeout: .seconds(30)) } catch {
                throw daemonWentAway(error, client)
            }
            if connection.json {
                Output.json(value, pretty: false)
            } else if redraw {
                Output.line("\u{1B}[H\u{1B}[2J" + WallClock.iso8601(nanoseconds: WallClock.now()) + "  (Ctrl-C to quit)\n\n"
                    + Self.report(try Self.decode(value)))
            } else {
                Output.line(Self.oneLine(try Self.decode(value)))
            }
            usleep(1_000_000)
        }
    }

    static func decode(_ value: JSONValue) throws(CaptureError) -> StatusResult {
        try decodeResult(value, of: .getStatus, as: StatusResult.self)
    }

    private static func channelRows(_ status: StatusResult) -> Table {
        var table = Table(headers: ["CHANNEL", "TYPE", "FPS", "FRAMES", "DROPPED", "CHUNKS", "UPLOADED", "BYTES", "UPLOAD LAG", ""],
                          rightAligned: [2, 3, 4, 5, 6, 7, 8])
        for c in status.channels {
            table.rows.append([
                c.channelId, c.type.rawValue, Format.number(c.fps), Format.number(c.frames), Format.number(c.dropped),
                Format.number(c.chunksSpooled), Format.number(c.chunksUploaded), Format.bytes(Int64(c.bytes)),
                Format.milliseconds(c.uploadLagMs), c.paused ? "paused" : "",
            ])
        }
        return table
    }

    /// The multi-line human report.
    static func report(_ status: StatusResult) -> String {
        var lines = ["state:    \(status.state.rawValue)"]
        if let session = status.sessionId { lines.append("session:  \(session)") }
        if let started = status.startedAt { lines.append("started:  \(started)") }
        if let elapsed = status.elapsedNs { lines.append("elapsed:  \(Format.duration(ns: elapsed))") }
        if !status.pausedTracks.isEmpty { lines.append("paused:   \(status.pausedTracks.map(\.rawValue).joined(separator: ", "))") }
        if let failure = status.failure { lines.append("failure:  \(failure.code): \(failure.message)") }
        if let u = status.upload {
            lines.append("upload:   \(u.phase.rawValue)\(u.connected ? ", connected" : "") to \(status.endpoint ?? "?"), "
                + "\(u.chunksUploaded) chunks uploaded, \(u.chunksPending) pending (\(Format.bytes(Int64(u.bytesPending)))), "
                + "lag \(Format.milliseconds(u.uploadLagMs))")
            if u.incompatibleEndpoint {
                lines.append("          the endpoint does not speak the capture uplink protocol (ENDPOINT_INCOMPATIBLE); "
                    + "chunks wait in the spool")
            }
        }
        for (id, u) in status.earlierUploads.sorted(by: { $0.key < $1.key }) {
            lines.append("earlier:  \(id): \(u.phase.rawValue), \(u.chunksPending) chunks pending, \(u.chunksUploaded) uploaded")
        }
        if let d = status.daemon {
            lines.append("daemon:   capture-agent \(d.version), pid \(d.pid), up \(Format.duration(ns: d.uptimeNs)), \(d.clients) client(s)")
        }
        if let displays = status.displayBackend { lines.append("displays: \(displays.backend): \(displays.reason)") }
        let table = channelRows(status)
        if !table.rows.isEmpty { lines += ["", table.render()] }
        return lines.joined(separator: "\n")
    }

    /// One `key=value` line per tick (--watch when stdout is not a terminal).
    static func oneLine(_ status: StatusResult) -> String {
        var parts = [WallClock.iso8601(nanoseconds: WallClock.now()), "state=\(status.state.rawValue)"]
        if let session = status.sessionId { parts.append("session=\(session)") }
        if let elapsed = status.elapsedNs { parts.append("elapsed=\(Format.duration(ns: elapsed))") }
        if !status.pausedTracks.isEmpty { parts.append("paused=\(status.pausedTracks.map(\.rawValue).joined(separator: ","))") }
        if let code = status.failure?.code { parts.append("failure=\(code)") }
        if let u = status.upload { parts.append("upload=\(u.phase.rawValue),pending=\(u.chunksPending),lagMs=\(u.uploadLagMs)") }
        for c in status.channels {
            parts.append("\(c.channelId):fps=\(Format.number(c.fps)),frames=\(c.frames),"
                + "dropped=\(c.dropped),chunks=\(c.chunksSpooled)/\(Format.number(c.chunksUploaded)),"
                + "bytes=\(c.bytes),lagMs=\(Format.number(c.uploadLagMs))")
        }
        return parts.joined(separator: " ")
    }
}
