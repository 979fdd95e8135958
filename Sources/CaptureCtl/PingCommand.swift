import ArgumentParser
import CaptureControl
import CaptureCore

struct PingCommand: ClientCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Check that the daemon answers.")

    @OptionGroup var connection: ConnectionOptions

    func execute() throws(CaptureError) {
        let client = try connection.connect()
        let sent = MonotonicClock.now()
        let result = try client.call(ControlCommand.ping.rawValue, timeout: .seconds(10))
        let roundTrip = Double(MonotonicClock.now() - sent) / 1e6
        if connection.json { return Output.json(result) }
        Output.line("capture-agent \(result["version"]?.stringValue ?? "?") (pid \(Format.number(result["pid"])), "
            + "up \(Format.duration(ns: result["uptimeNs"]?.int64Value))) answered in \(roundTrip.fixed(1)) ms")
    }
}
